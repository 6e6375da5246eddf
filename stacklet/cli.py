"""The ``stacklet`` command: up, down, status, server, agent, topology, db, config.

Thin on purpose: process handling is in ``stacklet.daemon``, first-start files in
``stacklet.bootstrap``, migrations in ``stacklet.store.migrate``.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from sqlalchemy.exc import OperationalError

from stacklet import bootstrap, daemon
from stacklet import config as config_mod
from stacklet.config import Config, ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

START_TIMEOUT = 40.0
STOP_TIMEOUT = 15.0


def _data_dir(args: argparse.Namespace) -> Path:
    explicit = args.data_dir or os.environ.get("STACKLET_DATA_DIR")
    return Path(explicit) if explicit else config_mod.DEFAULT_DATA_DIR


def _load(args: argparse.Namespace) -> Config:
    return config_mod.load(_data_dir(args), getattr(args, "config_file", None))


def _server_process(conf: Config) -> daemon.Managed:
    return daemon.Managed(
        name="server",
        pidfile=conf.data_dir / "run" / "server.pid",
        logfile=conf.data_dir / "log" / "server.log",
        markers=("server", str(conf.data_dir)),
    )


def _health_url(conf: Config) -> str:
    return bootstrap.auth_url(conf)


def _safe_db_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as written
        return url


def _bind_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port, or None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{host}:{port} is already in use by another process"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


# --- commands -------------------------------------------------------------------------------

def cmd_up(args: argparse.Namespace) -> int:
    os.umask(0o077)  # the database and logs hold secrets
    data_dir = _data_dir(args)
    bootstrap.ensure_dirs(data_dir)
    conf = config_mod.load(data_dir)
    if bootstrap.ensure_config_file(conf):
        print(f"wrote {conf.config_file}")
        conf = config_mod.load(data_dir)    # with what the new file says
    hold = _host_side(conf)
    if hold is False:
        return EXIT_FAILED
    proc = _server_process(conf)
    pid = daemon.running_pid(proc)
    if pid is None:
        proc.pidfile.unlink(missing_ok=True)
        problem = _bind_problem(conf.DEFAULT.bind_host, conf.DEFAULT.bind_port)
        if problem:
            print(f"error: {problem}; see bind_host and bind_port in {conf.config_file}",
                  file=sys.stderr)
            return EXIT_FAILED

    passwords = _prepare_database(conf)
    if pid is not None:
        return _confirm_running(conf, proc, pid, passwords, hold)

    argv = [sys.executable, "-m", "stacklet.cli", "server", "--data-dir", str(conf.data_dir)]
    child = daemon.spawn(proc, argv)
    try:
        daemon.wait_healthy(_health_url(conf), child, proc.logfile, timeout=START_TIMEOUT)
    except daemon.StartError as exc:
        daemon.stop(proc, timeout=5.0)
        print(f"error: stacklet server did not start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    bootstrap.write_client_files(conf, passwords)
    print(f"stacklet is running (pid {child.pid}) at {conf.public_url}")
    node = _start_local_node(conf)
    _demo_topology(conf, hold if node else False)
    _default_image(conf)
    _print_usage(conf)
    return EXIT_OK


def _host_side(conf: Config) -> bool | None:
    """Whether `up` may give br-ex the demo's gateway address: True, None (skip it, with a
    warning: the demo exists but its range now shadows something of this host) or False
    (refuse to start: the demo would be created in a range that shadows something)."""
    from stacklet import demo, host_routes, local_node

    plan = demo.planned(conf)
    if plan is None or local_node.holds_public_gateway(plan["cidr"], plan["gateway_ip"]):
        return True
    problems = host_routes.conflicts(plan["cidr"])
    if not problems:
        return True
    listed = "\n  ".join(problems)
    if demo.recorded(conf.data_dir) is None:
        print(f"error: the demo's external network {plan['cidr']} would shadow what this host "
              f"uses:\n  {listed}\nChoose another range with demo_public_cidr in [DEFAULT] "
              f"of {conf.config_file} (or create_demo_topology = false); nothing was started.",
              file=sys.stderr)
        return False
    print(f"warning: this host does not hold {plan['gateway_ip']} on br-ex: the demo's "
          f"external network {plan['cidr']} would shadow what this host uses:\n  {listed}",
          file=sys.stderr)
    return None


def _prepare_database(conf: Config) -> bootstrap.Passwords:
    """Migrate the schema and (re)bootstrap identity; on every `up`, both are idempotent."""
    from stacklet.store import migrate

    passwords = bootstrap.ensure_passwords(conf.data_dir)
    migrate.upgrade(conf.database_url)
    _warn_schema_drift(conf.database_url)
    bootstrap.bootstrap_identity(conf, passwords)
    return passwords


def _confirm_running(conf: Config, proc: daemon.Managed, pid: int,
                     passwords: bootstrap.Passwords, hold: bool | None) -> int:
    try:
        daemon.wait_healthy(_health_url(conf), None, proc.logfile, timeout=10.0)
    except daemon.StartError as exc:
        print(f"error: stacklet server (pid {pid}) runs but is not healthy: {exc}\n"
              f"Try `stacklet down --data-dir {conf.data_dir}` and `up` again.",
              file=sys.stderr)
        return EXIT_FAILED
    bootstrap.write_client_files(conf, passwords)
    print(f"stacklet is already running (pid {pid}) at {conf.public_url}")
    node = _start_local_node(conf)
    _demo_topology(conf, hold if node else False)
    _default_image(conf)
    _print_usage(conf)
    return EXIT_OK


def _start_local_node(conf: Config) -> bool:
    """Open vSwitch and the agent for this node (skipped with [agent] enabled = false);
    whether they run (a br-ex that is not ours must not be given the demo's address)."""
    if not conf.agent.enabled:
        return False
    from stacklet import local_node
    from stacklet.store.models.base import isotime

    since = isotime()
    try:
        pid, connection = local_node.start(conf)
    except Exception as exc:  # noqa: BLE001 - the API stays usable without a dataplane
        print(f"warning: the local node's dataplane did not start: {exc}", file=sys.stderr)
        return False
    if local_node.wait_registered(conf, pid, since):
        print(f"agent for host {conf.host} is running (pid {pid}), Open vSwitch at {connection}")
    else:
        print(f"warning: the agent (pid {pid}) did not report within "
              f"{local_node.AGENT_START_TIMEOUT:.0f} s; see "
              f"{local_node.agent_process(conf).logfile}", file=sys.stderr)
    return True


def _demo_topology(conf: Config, hold: bool | None) -> None:
    """DevStack's public/private/router1 on first start; the host holds public's gateway
    unless _host_side said not to."""
    from stacklet import demo

    try:
        done = demo.ensure(conf)
    except Exception as exc:  # noqa: BLE001 - the cloud is usable without its demo
        print(f"warning: the demo topology was not created: {exc}", file=sys.stderr)
        return
    if done is None:
        return
    held = False
    if hold:        # _host_side allowed it and this node's Open vSwitch and agent run
        from stacklet import local_node

        public = done["public"]
        held = local_node.hold_public_gateway(conf, public["cidr"], public["gateway_ip"])
        if not held:
            print("warning: br-ex did not appear: this host does not hold "
                  f"{public['gateway_ip']}", file=sys.stderr)
    print(demo.describe(done, held))


def _default_image(conf: Config) -> None:
    """The tiny guest image in Glance on first start (built into the image cache if needed)."""
    from stacklet.guest_images import register

    try:
        done = register.ensure(conf)
    except Exception as exc:  # noqa: BLE001 - the cloud is usable without its image
        print(f"warning: the default image was not registered: {exc}", file=sys.stderr)
        return
    if done is not None:
        print(register.describe(done))


def _openstack_command() -> str:
    """How to call the openstack client: plain when on PATH, else the one next to stacklet."""
    local = Path(sys.executable).parent / "openstack"
    found = shutil.which("openstack")
    if local.exists() and (found is None or Path(found).resolve() != local.resolve()):
        return str(local)
    return "openstack"


def _warn_schema_drift(url: str) -> None:
    """Tell developers when the models have tables or columns no migration creates."""
    from stacklet.store import migrate

    diffs = migrate.schema_differences(url)
    if diffs:
        print(f"warning: the database schema differs from the models in {len(diffs)} places "
              f"(first: {diffs[0]!r}); add a migration with `stacklet db revision`",
              file=sys.stderr)


def _print_usage(conf: Config) -> None:
    clouds = conf.data_dir / bootstrap.CLOUDS_FILE
    rc = conf.data_dir / bootstrap.OPENRC_FILE
    print(f"""
Use it with the OpenStack client:
    export OS_CLIENT_CONFIG_FILE={clouds} OS_CLOUD=stacklet-admin
    {_openstack_command()} network list
OS_CLOUD=stacklet is the demo user in project demo. `. {rc}` sets the admin
credentials as OS_* variables instead.""")
    if conf.agent.enabled and conf.compute.enabled:
        print(f"""Boot an instance (README: "Booting instances"):
    OS_CLOUD=stacklet {_openstack_command()} server create --image stacklet-tiny \\
        --flavor m1.tiny --network private --wait vm1""")
    elif conf.agent.enabled:
        print(f"This node runs no instances: `[compute] enabled = true` in {conf.config_file} "
              f"(then `stacklet down` and `up`) makes it a compute node.")


def cmd_down(args: argparse.Namespace) -> int:
    """Every step runs whatever the others did; failures are named at the end (exit 1)."""
    conf = _load(args)
    from stacklet import local_node

    def stop_server() -> str:
        pid = daemon.stop(_server_process(conf), timeout=STOP_TIMEOUT)
        if pid is None:
            return "stacklet is not running"
        return f"stopped stacklet server (pid {pid}); data kept in {conf.data_dir}"

    failed = []
    for step, func in [*local_node.stop_steps(conf), ("stop the server", stop_server),
                       ("end leftover processes", lambda: local_node.end_leftovers(conf))]:
        try:
            what = func()
        except Exception as exc:  # noqa: BLE001 - the other steps must still run
            failed.append(step)
            print(f"error: stacklet down: {step} failed: {exc}", file=sys.stderr)
            continue
        if what:
            print(what if what.startswith(("stopped", "stacklet")) else f"stopped {what}")
    if failed:
        print(f"error: stacklet down: {len(failed)} step(s) failed: {'; '.join(failed)}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    conf = _load(args)
    proc = _server_process(conf)
    pid = daemon.running_pid(proc)
    url = _health_url(conf)
    if pid is None:
        state, code = "not running", EXIT_NOT_RUNNING
    elif daemon.healthy(url):
        state, code = f"running (pid {pid}), healthy", EXIT_OK
    else:
        state, code = f"running (pid {pid}), NOT healthy: {url} does not answer 200", EXIT_FAILED
    print(f"stacklet server: {state}")
    rows = [
        ("url", conf.public_url),
        ("identity", url),
        ("data dir", str(conf.data_dir)),
        ("config", f"{conf.config_file}" + ("" if conf.config_file.exists() else " (absent)")),
        ("database", _safe_db_url(conf.database_url)),
        ("log", str(proc.logfile)),
        ("clouds.yaml", str(conf.data_dir / bootstrap.CLOUDS_FILE)),
    ]
    if conf.agent.enabled:
        from stacklet import local_node
        rows += local_node.status_rows(conf)
    for label, value in rows:
        print(f"  {label + ':':<13}{value}")
    return code


def cmd_server(args: argparse.Namespace) -> int:
    import uvicorn

    os.umask(0o077)
    conf = _load(args)
    level = str(conf.DEFAULT.log_level).lower()
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workers = args.workers if args.workers is not None else conf.DEFAULT.api_workers
    if workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if workers > 1 and not conf.DEFAULT.transport_url:
        print("error: --workers N>1 needs [DEFAULT] transport_url (RabbitMQ): without it the "
              "agents' wake-ups and requests live in one server process's memory",
              file=sys.stderr)
        return EXIT_USAGE
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    uconf = uvicorn.Config(
        "stacklet.api.app:create_app", host=conf.DEFAULT.bind_host,
        port=conf.DEFAULT.bind_port, log_level=level,
        access_log=False, http=http, ws="wsproto", loop="auto", log_config=None,
        # uvicorn closes an idle connection after 5 s; a client sending on it at that moment
        # sees "disconnected without a response". OpenStack's servers keep idle clients far
        # longer (eventlet's wsgi: client_socket_timeout 900 s).
        timeout_keep_alive=75)
    agent_path = conf.data_dir / "run" / "agent.sock"
    # One server, two listeners: TCP for the OpenStack APIs (and agents on other machines),
    # the unix socket for this machine's agents. Bound here, before any worker starts, and
    # shared by every worker (the kernel hands each connection to one of them).
    tcp = uconf.bind_socket()  # exits with uvicorn's message when the port is taken
    agent_sock = _agent_socket(agent_path)
    sockets = [tcp] + ([agent_sock] if agent_sock else [])
    if workers == 1:
        return _serve(conf, uconf, sockets, leader=True, unlink=agent_path)
    try:
        return _supervise(conf, uconf, sockets, workers)
    finally:
        agent_path.unlink(missing_ok=True)


def _serve(conf: Config, uconf, sockets: list[socket.socket], leader: bool,
           unlink: Path | None = None) -> int:
    """One server process: the app, and (in the leader only) the conductor and the recovery
    of cut uploads and snapshots; serves on the sockets until SIGTERM/SIGINT."""
    import uvicorn

    from stacklet.api.app import create_app

    app = create_app(conf)
    uconf.app = app
    uconf.loaded = False
    if leader:
        app.state.services.image.data.recover()  # uploads cut short by the last stop
        from stacklet.services.compute.snapshots import Snapshots
        Snapshots(app.state.services).recover()  # snapshots cut short by the last stop
        from stacklet.services.compute.conductor import Conductor
        Conductor(app.state.services).start()    # the boot flow's server side
    bus = app.state.services.bus

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            bus.close()  # pending long polls answer now instead of holding the shutdown
            try:
                await super().shutdown(sockets)
            finally:
                # Here, not after run(): uvicorn re-raises SIGTERM once serving is over.
                if unlink is not None:
                    unlink.unlink(missing_ok=True)

    server = Server(uconf)
    # uvicorn shuts down gracefully on SIGTERM and SIGINT
    server.run(sockets=sockets)
    return EXIT_OK if server.started else EXIT_FAILED


def _supervise(conf: Config, uconf, sockets: list[socket.socket], workers: int) -> int:
    """``--workers N``: N server processes forked from this one on the same listening
    sockets, sharing the database and the bus. Worker 0 also runs the conductor. A worker
    that dies is started again after a second; SIGTERM/SIGINT stop them all."""
    log = logging.getLogger("stacklet.server")
    children: dict[int, int] = {}       # pid → worker index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = EXIT_FAILED
            try:
                code = _serve(conf, uconf, sockets, leader=index == 0)
            except BaseException:  # a worker must never return into the parent's code
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        children[pid] = index
        log.info("started worker %d (pid %d)", index, pid)

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(workers):
        spawn(index)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        if not stopping:
            log.warning("worker %d (pid %d) ended (%s); starting it again", index, pid,
                        f"signal {-os.waitstatus_to_exitcode(status)}"
                        if os.WIFSIGNALED(status) else
                        f"exit {os.waitstatus_to_exitcode(status)}")
            time.sleep(1.0)
            if not stopping:
                spawn(index)
    return EXIT_OK


def _agent_socket(path: Path) -> socket.socket | None:
    """The agents' unix socket (mode 0600; a stale one is replaced); None when it cannot be
    created, so the OpenStack APIs still start."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        logging.getLogger("stacklet.server").error(
            "cannot listen on %s for agents: %s", path, exc)
        return None
    sock.set_inheritable(True)
    logging.getLogger("stacklet.server").info("agents' API on unix:%s", path)
    return sock


def cmd_agent(args: argparse.Namespace) -> int:
    from stacklet.agent import agent

    conf = _load(args)
    level = str(conf.DEFAULT.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("ovsdbapp", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return agent.main(conf)


def cmd_node_credential(args: argparse.Namespace) -> int:
    from stacklet.api.node_auth import NodeCredentials

    os.umask(0o077)
    conf = _load(args)
    store = NodeCredentials(conf.data_dir)
    if args.revoke:
        if not store.revoke(args.host):
            print(f"error: no credential for host {args.host}", file=sys.stderr)
            return EXIT_FAILED
        print(f"revoked the credential of host {args.host}")
        return EXIT_OK
    try:
        secret = store.create(args.host)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.output is not None:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
        print(f"credential of host {args.host} written to {args.output}")
    else:
        print(secret)
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from stacklet.store import migrate

    os.umask(0o077)
    conf = _load(args)
    bootstrap.ensure_dirs(conf.data_dir)
    migrate.upgrade(conf.database_url, args.revision)
    print(f"database at revision {migrate.current_revision(conf.database_url)}: "
          f"{_safe_db_url(conf.database_url)}")
    return EXIT_OK


def cmd_db_current(args: argparse.Namespace) -> int:
    from stacklet.store import migrate

    conf = _load(args)
    current = migrate.current_revision(conf.database_url)
    head = migrate.head_revision()
    print(f"current: {current or '(empty database)'}  head: {head}")
    return EXIT_OK if current == head else EXIT_FAILED


def cmd_db_revision(args: argparse.Namespace) -> int:
    from stacklet.store import migrate

    conf = _load(args)
    migrate.revision(conf.database_url, args.message, autogenerate=args.autogenerate)
    return EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    from stacklet.trace import client

    return client.main(_data_dir(args), args.src, args.dst, args.proto,
                       args.dport, args.sport, args.src_ip, args.json)


def cmd_topology(args: argparse.Namespace) -> int:
    """The running cloud's topology (``GET /stacklet/v1/topology`` as the admin of the data
    directory's clouds.yaml), rendered by ``stacklet.topology_render``."""
    from stacklet.admin_client import AdminClient, AdminClientError
    from stacklet.topology_render import RenderError, render

    params = {"project_id": args.project_id} if args.project_id else None
    try:
        with AdminClient(_data_dir(args)) as client:
            topo = client.get("/stacklet/v1/topology", params=params)["topology"]
        sys.stdout.write(render(topo, args.format))
    except (AdminClientError, RenderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_config_sample(args: argparse.Namespace) -> int:
    sys.stdout.write(config_mod.sample())
    return EXIT_OK


# --- argument parsing -----------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stacklet", description="An OpenStack-compatible private cloud in one package.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument(
        "--data-dir", type=Path, default=None,
        help=f"data directory (default: $STACKLET_DATA_DIR or {config_mod.DEFAULT_DATA_DIR})")

    def add(name: str, func, help_: str, parents=(data_dir,)):
        sub = commands.add_parser(name, help=help_, description=help_, parents=list(parents))
        sub.set_defaults(func=func)
        return sub

    add("up", cmd_up, "Initialise the data directory if needed and start the server.")
    add("down", cmd_down, "Stop what `up` started; the data stays.")
    add("status", cmd_status,
        "Show what runs where and whether it is healthy (exit 0 healthy, 1 unhealthy, "
        "3 not running).")
    server = add("server", cmd_server, "Run the API server in the foreground.")
    server.add_argument("--workers", type=int, default=None,
                        help="API server processes sharing the listening sockets, the database "
                             "and the bus (default: [DEFAULT] api_workers, 1; N>1 needs "
                             "[DEFAULT] transport_url)")
    agent = add("agent", cmd_agent,
                "Run this node's agent in the foreground (Open vSwitch role); runs as root.")
    agent.add_argument("--config-file", type=Path, default=None,
                       help="configuration file (default: <data dir>/stacklet.conf)")

    trace = add("trace", cmd_trace,
                "Follow a packet from SRC to DST through the live dataplane and print every "
                "step in OpenStack terms (exit 0 delivered, 1 dropped, 2 error).")
    trace.add_argument("src", help="port id, fixed or floating IP, or external:<ip>")
    trace.add_argument("dst", help="port id, fixed or floating IP, or external:<ip>")
    trace.add_argument("--proto", choices=("icmp", "tcp", "udp"), default="icmp")
    trace.add_argument("--dport", type=int, default=None)
    trace.add_argument("--sport", type=int, default=None)
    trace.add_argument("--src-ip", default=None,
                       help="a forged source address (what anti-spoofing drops)")
    trace.add_argument("--json", action="store_true", help="the trace as JSON")

    from stacklet.topology_render import FORMATS

    topology = add("topology", cmd_topology,
                   "Show the cloud's projects, networks, subnets, routers, ports and floating "
                   "IPs and the node each lives on (admin credentials of the data directory).")
    topology.add_argument("--format", choices=FORMATS, default="text",
                          help="text (default), dot (Graphviz), svg (needs Graphviz's dot) "
                               "or json (the API's document)")
    topology.add_argument("--project-id", default=None,
                          help="only this project's resources and the networks they use")

    db = commands.add_parser("db", help="Database schema migrations.")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    upgrade = db_commands.add_parser("upgrade", parents=[data_dir],
                                     help="Migrate the database to the latest schema.")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=cmd_db_upgrade)
    current = db_commands.add_parser("current", parents=[data_dir],
                                     help="Show the database's schema revision.")
    current.set_defaults(func=cmd_db_current)
    revision = db_commands.add_parser("revision", parents=[data_dir],
                                      help="Write a new migration script (for developers).")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--no-autogenerate", dest="autogenerate", action="store_false",
                          help="write an empty script instead of comparing with the models")
    revision.set_defaults(func=cmd_db_revision)

    node = commands.add_parser("node", help="Nodes of a multi-node cloud (on the controller).")
    node_commands = node.add_subparsers(dest="node_command", metavar="NODE_COMMAND",
                                        required=True)
    credential = node_commands.add_parser(
        "credential", parents=[data_dir],
        help="Make (or --revoke) the credential with which HOST's agent reaches the server "
             "over TCP; prints the secret once (only its hash is kept).")
    credential.add_argument("host")
    credential.add_argument("--revoke", action="store_true")
    credential.add_argument("--output", type=Path, default=None,
                            help="write the secret to this file (mode 0600) instead of "
                                 "printing it")
    credential.set_defaults(func=cmd_node_credential)

    conf = commands.add_parser("config", help="Configuration helpers.")
    conf_commands = conf.add_subparsers(dest="config_command", metavar="CONFIG_COMMAND",
                                        required=True)
    sample = conf_commands.add_parser("sample", help="Print a commented file with every option.")
    sample.set_defaults(func=cmd_config_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OperationalError as exc:
        print(f"error: database: {exc.orig or exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
