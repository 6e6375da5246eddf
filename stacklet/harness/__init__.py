"""Test nodes on one machine (see cluster.py): Cluster, Node, Instance, sweep."""

from stacklet.harness.cluster import (
    Cluster,
    HarnessError,
    Instance,
    Node,
    PingRun,
    fake_port,
    sweep,
)

__all__ = ["Cluster", "HarnessError", "Instance", "Node", "PingRun", "fake_port", "sweep"]
