"""Throwaway PostgreSQL and MariaDB servers for tests: Debian's binaries, data in a temp dir.

    server = PostgresServer(Path(tempfile.mkdtemp()))
    server.start()                       # initdb on first use, then the server on a free port
    url = server.create_database("t1")   # postgresql+psycopg://stacklet:...@127.0.0.1:PORT/t1
    ...
    server.stop()                        # SIGTERM to the PID it started, SIGKILL after a while

Each server listens on 127.0.0.1 on a port of its own and keeps its unix socket in its own
directory; nothing here reads /etc/postgresql or /etc/mysql (``--no-defaults``) or touches a
system-wide instance. As root, the servers run as Debian's ``postgres`` / ``mysql`` users (neither
agrees to run as root). Durability is traded for speed (no fsync): these are for tests only.

``ExternalServer`` gives the same create/drop interface over a server someone else runs
(``STACKLET_TEST_POSTGRES_URL`` / ``STACKLET_TEST_MARIADB_URL`` in the tests).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

USER = "stacklet"
PASSWORD = "stacklet-test"
START_TIMEOUT = 60.0



def terminate(proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """SIGTERM to a server process we started; SIGKILL if it lingers past ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def crash(proc: subprocess.Popen | None) -> None:
    """SIGKILL, as a crash would."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)


class DatabaseServerError(Exception):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_bin() -> Path | None:
    """Debian keeps PostgreSQL's server binaries in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


def missing(kind: str) -> list[str]:
    """What this machine lacks to run a throwaway ``postgresql`` or ``mariadb`` server."""
    if kind == "postgresql":
        bindir = _postgres_bin()
        if bindir is None or not (bindir / "initdb").exists():
            return ["PostgreSQL's server (initdb, postgres: Debian's postgresql)"]
        return []
    if kind == "mariadb":
        return [f"{tool} (Debian's mariadb-server)" for tool in ("mariadbd",
                                                                  "mariadb-install-db")
                if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin")]
    raise ValueError(kind)


def _admin_engine(url: str):
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def _database_name(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: letters, digits and _ only")
    return name


def _execute(admin_url: str, *statements: str) -> list:
    """Run statements in autocommit mode (CREATE/DROP DATABASE cannot run in a transaction);
    the first row of each, if any."""
    engine = _admin_engine(admin_url)
    try:
        rows = []
        with engine.connect() as conn:
            for sql in statements:
                result = conn.execute(text(sql))
                rows.append(result.first() if result.returns_rows else None)
        return rows
    finally:
        engine.dispose()


def _create(admin_url: str, kind: str, name: str, owner: str | None = None) -> None:
    name = _database_name(name)
    if kind == "postgresql":
        # C collation: names sort byte by byte, as on SQLite and MariaDB (docs/database.md)
        _execute(admin_url, f'CREATE DATABASE "{name}"' + (f" OWNER {owner}" if owner else "")
                 + " ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    else:
        _execute(admin_url, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")


def _drop(admin_url: str, kind: str, name: str) -> None:
    name = _database_name(name)
    if kind == "postgresql":
        _execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        _execute(admin_url, f"DROP DATABASE IF EXISTS `{name}`")


class _Server:
    """A server process this object started, known by its PID."""

    kind = ""
    system_user = ""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = port or _free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "server.log"

    # ownership: the servers refuse to run as root
    def _ids(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        entry = pwd.getpwnam(self.system_user)
        return entry.pw_uid, entry.pw_gid

    def _popen_user(self) -> dict:
        ids = self._ids()
        return {} if ids is None else {"user": ids[0], "group": ids[1], "extra_groups": []}

    def _own(self, path: Path) -> None:
        ids = self._ids()
        if ids is None:
            return
        os.chown(path, *ids)
        for parent, dirs, files in os.walk(path):
            for entry in dirs + files:
                os.chown(os.path.join(parent, entry), *ids, follow_symlinks=False)

    def _run(self, argv: list[str]) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              check=False, timeout=300, cwd=self.root, **self._popen_user())
        if proc.returncode != 0:
            raise DatabaseServerError(f"{' '.join(argv)} exited {proc.returncode}:\n"
                                      f"{proc.stdout}\n{proc.stderr}")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        lacking = missing(self.kind)
        if lacking:
            raise DatabaseServerError(f"cannot start {self.kind}: this machine lacks "
                                      f"{'; '.join(lacking)} (scripts/install.sh installs it)")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        if not self._initialized():
            self._initialize()
        self._own(self.root)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.root,
                                         start_new_session=True, **self._popen_user())
        self._wait_ready()
        self._after_start()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise DatabaseServerError(f"{self.kind} exited at start:\n{self.log_tail()}")
            try:
                _execute(self.admin_url, "SELECT 1")
                return
            except Exception as error:   # noqa: BLE001 - not up yet
                last = error
                time.sleep(0.2)
        self.stop()
        raise DatabaseServerError(f"{self.kind} not ready in {START_TIMEOUT:.0f}s ({last}):\n"
                                  f"{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's PID; SIGKILL if it lingers. Its data stays."""
        proc, self.proc = self.proc, None
        terminate(proc, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (for fault tests); ``start()`` brings it back."""
        proc, self.proc = self.proc, None
        crash(proc)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return f"(no {self.log})"

    def create_database(self, name: str) -> str:
        _create(self.admin_url, self.kind, name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        _drop(self.admin_url, self.kind, name)

    # per kind
    admin_url = ""

    def url(self, database: str) -> str:
        raise NotImplementedError

    def _initialized(self) -> bool:
        raise NotImplementedError

    def _initialize(self) -> None:
        raise NotImplementedError

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _after_start(self) -> None:
        pass


class PostgresServer(_Server):
    kind = "postgresql"
    system_user = "postgres"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def _initialize(self) -> None:
        self.socket_dir.mkdir(exist_ok=True)
        self._own(self.root)
        # C collation: strings sort bytewise, as on SQLite
        self._run([str(_postgres_bin() / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"])

    def _argv(self) -> list[str]:
        return [str(_postgres_bin() / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.socket_dir), "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=300",
                "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning"]

    def _after_start(self) -> None:
        if _execute(self.admin_url, f"SELECT 1 FROM pg_roles WHERE rolname = '{USER}'") == [None]:
            _execute(self.admin_url, f"CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'")

    def create_database(self, name: str) -> str:
        _create(self.admin_url, self.kind, name, owner=USER)
        return self.url(name)


class MariaDBServer(_Server):
    kind = "mariadb"
    system_user = "mysql"

    @property
    def socket_path(self) -> Path:
        return self.root / "mysqld.sock"

    @property
    def admin_url(self) -> str:
        # root through the socket (install-db made root@localhost password-less)
        return f"mysql+pymysql://root@localhost/?unix_socket={self.socket_path}"

    def url(self, database: str) -> str:
        return (f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"
                f"?charset=utf8mb4")

    def _initialized(self) -> bool:
        return (self.data / "mysql").is_dir()

    def _initialize(self) -> None:
        self._own(self.root)
        argv = [shutil.which("mariadb-install-db") or "mariadb-install-db", "--no-defaults",
                f"--datadir={self.data}", "--auth-root-authentication-method=normal",
                "--skip-test-db", "--skip-name-resolve"]
        if os.geteuid() == 0:
            argv.append(f"--user={self.system_user}")
        self._run(argv)

    def _argv(self) -> list[str]:
        mariadbd = shutil.which("mariadbd", path=os.environ.get("PATH", "") + ":/usr/sbin")
        # The server's default collation stays Debian's case-insensitive one on purpose:
        # stacklet's tables must say their own (see stacklet/store/models/base.py).
        return [mariadbd or "mariadbd", "--no-defaults", f"--datadir={self.data}",
                f"--socket={self.socket_path}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--pid-file={self.root / 'mariadbd.pid'}",
                "--skip-log-bin", "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0", "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=32M", "--max-connections=300",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci"]

    def _after_start(self) -> None:
        for host in ("127.0.0.1", "localhost"):
            _execute(self.admin_url,
                     f"CREATE USER IF NOT EXISTS '{USER}'@'{host}' IDENTIFIED BY '{PASSWORD}'",
                     f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'{host}'")


class ExternalServer:
    """A server someone else runs, given as a URL with administrative rights: databases are
    created and dropped in it, nothing else is touched."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        self.kind = {"postgresql": "postgresql", "mysql": "mariadb",
                     "mariadb": "mariadb"}.get(backend, backend)
        self._url = parsed
        default_db = "postgres" if self.kind == "postgresql" else None
        self.admin_url = parsed.set(database=default_db).render_as_string(hide_password=False)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def url(self, database: str) -> str:
        return self._url.set(database=database).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        _create(self.admin_url, self.kind, name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        _drop(self.admin_url, self.kind, name)
