"""A config drive as Nova writes one: ISO 9660 with the volume label ``config-2`` and the
metadata service's documents under ``openstack/<version>/`` (and ``ec2/<version>/
meta-data.json``), made with genisoimage and Nova's options.

The documents come from ``stacklet.metadata.formats`` (the metadata service's own renderer),
so a guest reads the same bytes from the drive as from 169.254.169.254. The driver knows a VIF's
addresses but not its subnets: every address is written as a DHCP subnet (``ipv4_dhcp``), which
is what a stacklet network with a DHCP port gives.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import shutil
import tempfile
from pathlib import Path

from stacklet import linux
from stacklet.agent.compute.driver import InstanceSpec
from stacklet.metadata import formats

VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "2016-10-06",
            "2017-02-22", "2018-08-27", "2020-10-14", "latest")
EC2_VERSIONS = ("2009-04-04", "latest")


def instance_metadata(spec: InstanceSpec) -> formats.InstanceMetadata:
    keys = tuple(formats.KeyPair(name, data) for name, data in spec.public_keys.items())
    ec2_id = int(hashlib.sha256(spec.uuid.encode()).hexdigest()[:7], 16)
    instance = formats.Instance(
        uuid=spec.uuid, name=spec.name, hostname=spec.hostname, project_id=spec.project_id,
        availability_zone=spec.availability_zone, ec2_id=ec2_id, keys=keys,
        user_data=spec.user_data, meta={str(k): str(v) for k, v in spec.metadata.items()})
    vifs = []
    for vif in spec.vifs:
        subnets = tuple(
            formats.Subnet(id="", cidr=f"{ip}/{ipaddress.ip_address(ip).max_prefixlen}",
                           ip_version=ipaddress.ip_address(ip).version, ips=(ip,),
                           dhcp_server="dhcp")
            for ip in vif.fixed_ips)
        vifs.append(formats.Vif(port_id=vif.port_id, mac_address=vif.mac,
                                network_id=vif.network_id, mtu=vif.mtu, vif_type="ovs",
                                subnets=subnets))
    return formats.InstanceMetadata(instance=instance, vifs=tuple(vifs))


def tree(spec: InstanceSpec, root: Path) -> None:
    """Write the drive's files under ``root``."""
    md = instance_metadata(spec)
    for version in VERSIONS:
        d = root / "openstack" / version
        d.mkdir(parents=True)
        listing = formats.lookup(md, f"openstack/{version}/")[0].decode().split()
        for name in listing:
            (d / name).write_bytes(formats.lookup(md, f"openstack/{version}/{name}")[0])
    for version in EC2_VERSIONS:
        d = root / "ec2" / version
        d.mkdir(parents=True)
        data = formats.ec2_metadata(md, version)["meta-data"]
        (d / "meta-data.json").write_text(json.dumps(_plain(data)))
        if spec.user_data is not None:
            (d / "user-data").write_bytes(spec.user_data)


def _plain(data):
    """The EC2 tree without the renderer's private keys (``_name``)."""
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items() if not str(k).startswith("_")}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return data


def build(spec: InstanceSpec, target: Path) -> Path:
    """The ISO for ``spec`` at ``target`` (replaced atomically)."""
    with tempfile.TemporaryDirectory(prefix="configdrive-", dir=target.parent) as tmp:
        root = Path(tmp) / "root"
        tree(spec, root)
        iso = Path(tmp) / "config.iso"
        # nova/virt/configdrive.py's genisoimage options
        linux.run(["genisoimage", "-o", str(iso), "-ldots", "-allow-lowercase",
                   "-allow-multidot", "-l", "-publisher", "stacklet", "-quiet", "-J", "-r",
                   "-V", "config-2", str(root)], timeout=60)
        shutil.move(str(iso), target)
    return target
