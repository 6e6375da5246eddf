"""A node agent's Prometheus metrics, served at ``http://<[agent] metrics_bind>/metrics``.

    stacklet_agent_pass_duration_seconds{role, phase}   histogram
        role l2: one pass of the main loop by phase — fetch (the host snapshot, when the
        server changed), read, tags, compute, flows (``OvsRole.sync``'s timings), report (port
        statuses) and total; roles dhcp, l3 and compute: one pass (phase sync) of their thread
    stacklet_agent_flows{bridge}                        gauge: flows this agent installed
    stacklet_agent_ports_wired                          gauge: ports the last L2 pass wired
    stacklet_agent_repairs_total{role}                  counter: times the DHCP or L3 role found
                                                        the node differing from what it applied
                                                        (a flushed table, a dead dnsmasq, a
                                                        deleted address...) and repaired it
    stacklet_agent_last_pass_age_seconds{role}          gauge: since the role's last completed
                                                        pass (absent before the first)
    stacklet_agent_info{host}                           gauge 1: which host this agent is

The gauges are read from the agent at scrape time. The listener is prometheus_client's own
HTTP server in a daemon thread, in the agent's network namespace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from stacklet.contract import COMPUTE_AGENT, DHCP_AGENT, L3_AGENT, OVS_AGENT

LOG = logging.getLogger(__name__)
ROLES = {OVS_AGENT: "l2", DHCP_AGENT: "dhcp", L3_AGENT: "l3", COMPUTE_AGENT: "compute"}
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _AgentCollector(Collector):
    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterable[Any]:
        agent = self.agent
        info = GaugeMetricFamily("stacklet_agent_info", "The host this agent runs for.",
                                 labels=["host"])
        info.add_metric([agent.host], 1)
        flows = GaugeMetricFamily("stacklet_agent_flows",
                                  "OpenFlow flows this agent installed, per bridge.",
                                  labels=["bridge"])
        for bridge, table in sorted(agent.role.tables.items()):
            installed = table.installed
            if installed is not None:
                flows.add_metric([bridge], len(installed))
        wired = GaugeMetricFamily("stacklet_agent_ports_wired",
                                  "Ports the last L2 pass wired.")
        wired.add_metric([], len(agent.wired))
        repairs = CounterMetricFamily("stacklet_agent_repairs",
                                      "Repairs of the node's state by the DHCP and L3 roles.",
                                      labels=["role"])
        for role, name in ((agent.dhcp, "dhcp"), (agent.l3, "l3")):
            if role is not None:
                repairs.add_metric([name], role.repairs)
        age = GaugeMetricFamily("stacklet_agent_last_pass_age_seconds",
                                "Seconds since the role's last completed pass.",
                                labels=["role"])
        now = time.monotonic()
        for agent_type, health in agent.health.items():
            enabled = agent_type == OVS_AGENT or {
                DHCP_AGENT: agent.dhcp, L3_AGENT: agent.l3,
                COMPUTE_AGENT: getattr(agent, "compute", None)}.get(agent_type) is not None
            if enabled and health.completed is not None:
                age.add_metric([ROLES[agent_type]], max(0.0, now - health.completed))
        return [info, flows, wired, repairs, age]


class AgentMetrics:
    def __init__(self, agent: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.passes = Histogram("stacklet_agent_pass_duration_seconds",
                                "Agent passes by role and phase.", ["role", "phase"],
                                registry=self.registry, buckets=BUCKETS)
        self.registry.register(_AgentCollector(agent))
        self.server: Any = None

    def observe(self, role: str, phase: str, seconds: float) -> None:
        self.passes.labels(role, phase).observe(seconds)

    def serve(self, bind: str) -> bool:
        """Listen on ``host:port`` (empty: not at all); a failure is logged, the agent runs
        on without metrics."""
        if not bind:
            return False
        host, _, port = bind.rpartition(":")
        host = host[1:-1] if host.startswith("[") else host
        try:
            self.server, _ = start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as exc:
            LOG.error("metrics: cannot listen on %s: %s; no metrics served", bind, exc)
            return False
        LOG.info("metrics on http://%s/metrics", bind)
        return True

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
