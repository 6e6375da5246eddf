"""The filter scheduler as pure functions: filters, allocation ratios, weighers, server
group policies."""

from __future__ import annotations

from stacklet.services.compute.scheduler import HostState, Ratios, Request, passes, select_host


def host(name, **kw) -> HostState:
    base = {"vcpus": 4, "memory_mb": 4096, "disk_gb": 40}
    base.update(kw)
    return HostState(name, **base)


TINY = Request(1, 512, 1)


def test_disabled_and_dead_hosts_are_filtered():
    assert passes(host("a", enabled=False), TINY, Ratios()) == "ComputeFilter"
    assert passes(host("a", alive=False), TINY, Ratios()) == "ComputeFilter"
    assert passes(host("a"), TINY, Ratios()) is None


def test_capacity_with_allocation_ratios():
    full_ram = host("a", used_memory_mb=3800)
    assert passes(full_ram, TINY, Ratios()) == "RamFilter"
    assert passes(full_ram, TINY, Ratios(ram=1.5)) is None
    busy_cpu = host("a", used_vcpus=16)
    assert passes(busy_cpu, TINY, Ratios(cpu=4.0)) == "CoreFilter"
    assert passes(busy_cpu, TINY, Ratios(cpu=5.0)) is None
    assert passes(host("a", used_disk_gb=40), TINY, Ratios()) == "DiskFilter"


def test_zone_and_forced_host():
    assert passes(host("a", zone="az1"), Request(1, 512, 1, zone="az2"), Ratios()) == \
        "AvailabilityZoneFilter"
    assert passes(host("a"), Request(1, 512, 1, host="b"), Ratios()) == "ForcedHost"


def test_spread_prefers_free_ram_and_pack_the_fullest():
    hosts = [host("a", used_memory_mb=2048), host("b", used_memory_mb=512)]
    assert select_host(hosts, TINY, Ratios()).host == "b"
    assert select_host(hosts, TINY, Ratios(), weigher="pack").host == "a"


def test_no_host_fits():
    assert select_host([host("a", used_memory_mb=4000)], TINY, Ratios()) is None
    assert select_host([], TINY, Ratios()) is None


def test_anti_affinity_and_affinity():
    hosts = [host("a", group_members=1), host("b")]
    anti = Request(1, 512, 1, group_policy="anti-affinity")
    assert select_host(hosts, anti, Ratios()).host == "b"
    assert select_host([host("a", group_members=1)], anti, Ratios()) is None
    same = Request(1, 512, 1, group_policy="affinity")
    assert select_host([host("a", group_members=1, used_memory_mb=3000), host("b")], same,
                       Ratios()).host == "a"
    assert select_host([host("a"), host("b", used_memory_mb=100)], same, Ratios()).host == "a"


def test_soft_policies_weigh_but_never_refuse():
    soft_anti = Request(1, 512, 1, group_policy="soft-anti-affinity")
    assert select_host([host("a", group_members=1), host("b", used_memory_mb=2000)],
                       soft_anti, Ratios()).host == "b"
    assert select_host([host("a", group_members=2)], soft_anti, Ratios()).host == "a"
    soft = Request(1, 512, 1, group_policy="soft-affinity")
    assert select_host([host("a"), host("b", group_members=1, used_memory_mb=2000)], soft,
                       Ratios()).host == "b"
