"""A controller whose nodes are remote, as on a real multi-node cloud: the API server(s) and a
RabbitMQ broker of the test's own listen on the cluster's management network (172.31.<k>.1,
``Cluster(management=True)``); each node's agent reaches a server only over TCP
(``[agent] server_url = http://...``) with its own node credential (``stacklet node credential
<host>``) and gets its wake-ups and requests from RabbitMQ (``[DEFAULT] transport_url``), never
from the server's unix socket.

    with RemoteCloud(stacklet_tools, cluster_tools, servers=2, extra=db_section) as rc:
        net = rc.node("net", roles=("dhcp", "l3"), server=0)
        c1 = rc.node("c1", roles=("compute",), server=1)
        rc.clouds[0], rc.clouds[1]       # conftest Cloud objects, one per server process

``servers=2`` runs two separate ``stacklet server`` processes (not ``--workers``) on the same
database and broker, as two controllers would: the second has a data directory of its own
holding copies of what a deployment copies to each controller (the bootstrap passwords) and
the same node credentials file (linked) and image store (linked); the metadata proxies' shared
secret is set in both configurations.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rabbit_broker import drop_broker, new_broker

from stacklet.bootstrap import PASSWORDS_FILE
from stacklet.harness import Cluster, sweep
from stacklet.harness.cluster import Node

CREDENTIALS_FILE = "node-credentials.json"


class RemoteCloud:
    def __init__(self, tools: Any, cluster_tools: Any, *, servers: int = 1,
                 extra: str = "") -> None:
        """``extra``: more of the servers' configuration ([DEFAULT] lines first, then
        sections, as conftest.write_config takes them)."""
        self.tools = tools
        self.cluster_tools = cluster_tools
        self.prefix, self.work_dir = cluster_tools.claim()
        self.cluster: Cluster | None = None
        self.broker = None
        self.data_dirs: list[Path] = []
        self.clouds: list[Any] = []
        self.ports: list[int] = []
        try:
            self._start(servers, extra)
        except BaseException:
            self.close()
            raise

    def _start(self, servers: int, extra: str) -> None:
        tools = self.tools
        self.cluster = Cluster(self.work_dir, "/nonexistent/agent.sock", self.prefix,
                               overlay_net=random.randrange(100, 250), management=True)
        self.broker = new_broker(host=self.cluster.mgmt_ip)
        config = (f"bind_host = {self.cluster.mgmt_ip}\ntransport_url = {self.broker.url}\n"
                  f"{extra}\n[metadata]\nmetadata_proxy_shared_secret = {secrets.token_hex(16)}\n")
        root = Path(tempfile.mkdtemp(prefix="stacklet-test-remote-"))
        for index in range(servers):
            data_dir = root / f"controller{index}"
            port = tools.free_port()
            tools.write_config(data_dir, port, config)
            if index:
                first = self.data_dirs[0]
                shutil.copy2(first / PASSWORDS_FILE, data_dir / PASSWORDS_FILE)
                (data_dir / CREDENTIALS_FILE).symlink_to(first / CREDENTIALS_FILE)
                (first / "images").mkdir(mode=0o700, exist_ok=True)
                (data_dir / "images").symlink_to(first / "images")
            self.data_dirs.append(data_dir)
            self.ports.append(port)
            self.clouds.append(tools.start(data_dir))
        self.cluster.server_url = self.server_url(0)
        self.cluster.agent_ready = self.cluster_tools.agent_alive(self.clouds[0])

    @property
    def cloud(self) -> Any:
        return self.clouds[0]

    @property
    def data_dir(self) -> Path:
        return self.data_dirs[0]

    def server_url(self, index: int) -> str:
        return f"http://{self.cluster.mgmt_ip}:{self.ports[index]}"

    def node(self, name: str, *, server: int = 0, extra_config: dict | None = None,
             **kwargs: Any) -> Node:
        """A node whose agent talks to server ``server`` over TCP with its own credential
        and listens to RabbitMQ; returns once the cloud lists its agent alive."""
        host = f"{self.prefix}-{name}"
        credential = self.work_dir / f"{name}.credential"
        self.tools.run("node", "credential", host, "--output", str(credential),
                       data_dir=self.data_dir)
        config = {"DEFAULT": {"transport_url": self.broker.url},
                  "agent": {"credential_file": str(credential),
                            "server_url": self.server_url(server)}}
        for section, values in (extra_config or {}).items():
            config.setdefault(section, {}).update(values)
        return self.cluster.add_node(name, extra_config=config, **kwargs)

    def close(self) -> None:
        try:
            if self.cluster is not None:
                self.cluster.close()
        finally:
            for data_dir in reversed(self.data_dirs):
                self.tools.stop(data_dir)
            if self.data_dirs and not os.environ.get("STACKLET_TEST_KEEP"):
                shutil.rmtree(self.data_dirs[0].parent, ignore_errors=True)
            if self.broker is not None:
                drop_broker(self.broker)
            sweep(self.prefix)
            self.cluster_tools.release(self.prefix, self.work_dir)

    def __enter__(self) -> RemoteCloud:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
