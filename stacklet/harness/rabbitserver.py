"""A throwaway RabbitMQ server for tests: Debian's rabbitmq-server, everything in a temp dir.

    broker = RabbitServer(Path(tempfile.mkdtemp()), host="127.0.0.1")
    broker.start()            # its own epmd, then the broker; waits until AMQP answers
    broker.url                # rabbit://stacklet:...@127.0.0.1:PORT/  (transport_url)
    broker.stop()             # SIGTERM to the PIDs it started, SIGKILL after a while
    broker.start()            # again, same ports and data (a broker restart)

Nothing here touches a system-wide instance: the node name, the AMQP port, the Erlang
distribution port and the epmd port are free ports of their own; the Erlang cookie lives in
the temp dir (``HOME``); the configuration file, the enabled-plugins file, Mnesia and the logs
too (``/etc/rabbitmq`` is not read: ``RABBITMQ_CONF_ENV_FILE`` and ``RABBITMQ_CONFIG_FILE``
point into the temp dir). epmd runs in the foreground as our child and the broker is told not
to start one, so both are known by PID. The broker runs as root here (as the tests do).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from stacklet.harness.dbservers import crash, terminate

USER = "stacklet"
PASSWORD = "stacklet-test"
START_TIMEOUT = 90.0
SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


class BrokerError(Exception):
    pass


def missing() -> list[str]:
    """What this machine lacks to run a throwaway broker."""
    lacking = []
    if not os.access(SERVER, os.X_OK):
        lacking.append(f"{SERVER} (Debian's rabbitmq-server)")
    if not shutil.which("epmd"):
        lacking.append("epmd (Debian's erlang-base, a dependency of rabbitmq-server)")
    return lacking


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class RabbitServer:
    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = Path(root)
        self.host = host
        self.port = _free_port(host)
        self.dist_port = _free_port()
        self.epmd_port = _free_port()
        self.node = f"stacklet-{self.port}@localhost"
        self.proc: subprocess.Popen | None = None
        self.epmd: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rabbit://{USER}:{PASSWORD}@{self.host}:{self.port}/"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.root),                       # .erlang.cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_LOGS": str(self.root / "log" / "rabbit.log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbit.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false",
            "RABBITMQ_CTL_ERL_ARGS": "-start_epmd false",
            # the broker itself, not a shell wrapping it: our PID is the VM's
            "RABBITMQ_ALLOW_INPUT": "1",
        })
        return env

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log").mkdir(exist_ok=True)
        cookie = self.root / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex().upper())
            cookie.chmod(0o400)
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "advanced.config").write_text("[].\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq.conf").write_text("\n".join([
            f"listeners.tcp.default = {self.host}:{self.port}",
            "loopback_users = none",
            f"default_user = {USER}",
            f"default_pass = {PASSWORD}",
            "default_vhost = /",
            "disk_free_limit.absolute = 10MB",
            "vm_memory_high_watermark.relative = 0.6",
            "heartbeat = 10",
            "log.console = false",
            "log.file.level = info",
            "",
        ]))

    def start(self) -> None:
        lacking = missing()
        if lacking:
            raise BrokerError("cannot start a RabbitMQ server: missing " + ", ".join(lacking))
        self._prepare()
        env = self._env()
        if self.epmd is None or self.epmd.poll() is not None:
            self.epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env, start_new_session=True)
        with open(self.root / "log" / "console.log", "ab") as log:
            self.proc = subprocess.Popen([SERVER], stdin=subprocess.PIPE, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.root,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"RabbitMQ exited with {self.proc.returncode}:\n"
                                  f"{self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"RabbitMQ did not accept AMQP within {START_TIMEOUT:g} s:\n"
                          f"{self.log_tail()}")

    def _ready(self) -> bool:
        """The broker accepts our user (the listener opens before the boot is complete)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                sock.settimeout(2.0)
                data = sock.recv(7)
                # a Connection.Start frame: type 1, channel 0
                if not data.startswith(b"\x01\x00\x00"):
                    return False
        except OSError:
            return False
        try:
            text = (self.root / "log" / "rabbit.log").read_text(errors="replace")
        except OSError:
            return False
        return "Server startup complete" in text

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker (and keep epmd, so a restart keeps its ports)."""
        proc, self.proc = self.proc, None
        terminate(proc, timeout)

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        crash(proc)

    def close(self) -> None:
        """Stop the broker and its epmd."""
        self.stop()
        epmd, self.epmd = self.epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.terminate()
            try:
                epmd.wait(5)
            except subprocess.TimeoutExpired:
                epmd.kill()
                epmd.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in ("console.log", "rabbit.log"):
            try:
                text = (self.root / "log" / name).read_text(errors="replace")
            except OSError:
                continue
            out.append(f"--- {name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(out)
