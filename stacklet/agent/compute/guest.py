"""The init of a netns instance: what a small cloud image does when it boots.

Run by the netns driver as ``python -I -S guest.py <instance dir>`` inside the instance's
network namespace (``ip netns exec``, which also shows the namespace's devices in /sys) and in
a UTS and a mount namespace of its own (``unshare --uts --mount --propagation private``): the
host name it sets and the files it mounts stay the instance's. Standard library only (it
starts in ~20 ms with neither site nor the stacklet package).

    1. DHCP on every NIC (busybox udhcpc; its script configures the NIC, its routes from
       options 121/3 and the instance's own resolv.conf, never the host's)
    2. metadata: the config drive when there is one, else http://169.254.169.254: the
       OpenStack tree (meta_data.json, user_data — 404 is "none" —, vendor_data.json,
       network_data.json) and the EC2 tree (2009-04-04/meta-data), as cloud-init reads them
    3. host name (UTS namespace), the public keys into root's authorized_keys (the
       instance's own root directory, mounted on /root), the SSH host key
    4. an SSH server (dropbear) on port 22 that accepts those keys
    5. user_data when it is a script
Everything is told on stdout, which the driver opens as the console log. SIGTERM is an ACPI
power button: children are stopped and the init exits. NICs that appear later (hot plug) get
their DHCP client too.
"""

from __future__ import annotations

import base64
import encodings.idna  # noqa: F401 - socket needs it later, when /root (maybe the stdlib's
import hashlib  # home: pyenv) is the instance's own
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

METADATA_URL = "http://169.254.169.254"
EC2_VERSION = "2009-04-04"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# how long the boot waits for a first lease, then for the metadata service (cloud-init's
# OpenStack datasource waits up to 120 s for it), and for the other NICs' leases
LEASE_WAIT = 300.0
METADATA_WAIT = 120.0
OTHER_LEASES_WAIT = 5.0

UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc's script in a stacklet netns instance: configure the NIC, its routes (option 121
# wins over option 3, RFC 3442) and the instance's resolv.conf ($STACKLET_RESOLV: a file of
# the instance, never /etc/resolv.conf by path), then tell the init ($STACKLET_RUN/lease.*).
event="$1"
run="${STACKLET_RUN:?}"
n="${interface#eth}"
case "$n" in ''|*[!0-9]*) n=0 ;; esac
metric=$((100 + n))
case "$event" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    rm -f "$run/lease.$interface" "$run/resolv.$interface"
    ;;
bound|renew)
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    [ "$event" = bound ] && ip -4 addr flush dev "$interface"
    ip addr replace "$ip/${mask:-32}" broadcast "${broadcast:-+}" dev "$interface"
    if [ -n "$staticroutes" ]; then
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            if [ "$2" = 0.0.0.0 ]; then
                ip route replace "$1" dev "$interface" metric "$metric"
            else
                ip route replace "$1" via "$2" dev "$interface" metric "$metric"
            fi
            shift 2
        done
    elif [ -n "$router" ]; then
        set -- $router
        ip route replace default via "$1" dev "$interface" metric "$metric"
    fi
    {
        [ -n "$domain" ] && echo "search $domain"
        for server in $dns; do echo "nameserver $server"; done
    } > "$run/resolv.$interface"
    cat "$run"/resolv.* > "$STACKLET_RESOLV"
    echo "$interface: $ip/${mask:-32} router ${router:-none} mtu ${mtu:-default} dns ${dns:-none}"
    env > "$run/lease.$interface.tmp" && mv "$run/lease.$interface.tmp" "$run/lease.$interface"
    ;;
esac
exit 0
"""


SUPERVISOR = r"""# The instance's init once booted (guest.py execs it: same pid, same children).
run="${STACKLET_RUN:?}"
say() {
    read -r now _ < /proc/uptime
    now=$(( ${now%.*} * 100 + 1${now#*.} - 100 - STACKLET_START_CS ))
    printf '[%6d.%02d] %s\n' $((now / 100)) $((now % 100)) "$*"
}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
start_udhcpc() {
    ip link set dev "$1" up
    udhcpc -f -i "$1" -s "$run/udhcpc.script" -t 3 -T 1 -A 1 -O mtu -O staticroutes \
        -O domain < /dev/null &
    echo $! > "$run/pid.udhcpc.$1"
}
start_dropbear() {
    dropbear -F -E -s -g -p 22 -r "$STACKLET_HOSTKEY" -P "$run/dropbear.pid" \
        < /dev/null >> "$run/dropbear.log" 2>&1 &
    echo $! > "$run/pid.dropbear"
}
stop() {
    trap '' TERM INT
    say "reboot: System halted: stopping services"
    for f in "$run"/pid.*; do alive "$f" && kill -TERM "$(cat "$f")"; done
    n=0
    while [ $n -lt 20 ]; do
        left=0
        for f in "$run"/pid.*; do alive "$f" && left=1; done
        [ $left = 0 ] && break
        sleep 0.1 & wait $!
        n=$((n + 1))
    done
    for f in "$run"/pid.*; do alive "$f" && kill -KILL "$(cat "$f")"; done
    echo clean > "$run/exit"
    say "reboot: Power down"
    exit 0
}
trap stop TERM INT
while :; do
    sleep 1 & wait $!
    for dev in /sys/class/net/eth*; do
        [ -e "$dev" ] || continue
        nic=${dev##*/}
        if [ ! -f "$run/pid.udhcpc.$nic" ]; then
            say "$nic: new network interface"
            start_udhcpc "$nic"
        elif ! alive "$run/pid.udhcpc.$nic"; then
            say "udhcpc on $nic exited: restarting it"
            start_udhcpc "$nic"
        fi
    done
    if [ -f "$run/pid.dropbear" ] && ! alive "$run/pid.dropbear"; then
        say "dropbear exited: restarting it"
        start_dropbear
    fi
done
"""


class Shutdown(Exception):
    pass


class Init:
    def __init__(self, instance_dir: str) -> None:
        self.dir = instance_dir
        self.run = os.path.join(instance_dir, "run")
        self.root = os.path.join(instance_dir, "root")
        self.etc = os.path.join(instance_dir, "etc")
        self.started_cs = uptime_cs()
        self.udhcpc: dict[str, subprocess.Popen] = {}     # NIC -> its DHCP client
        self.sshd: subprocess.Popen | None = None
        self.user_data_proc: subprocess.Popen | None = None
        with open(os.path.join(instance_dir, "guest.json")) as f:
            self.hardware = json.load(f)

    # --- the console --------------------------------------------------------------------

    def say(self, message: str) -> None:
        elapsed = uptime_cs() - self.started_cs
        print(f"[{elapsed // 100:6d}.{elapsed % 100:02d}] {message}", flush=True)

    # --- boot ---------------------------------------------------------------------------

    def boot(self) -> None:
        self.say(f"stacklet netns instance {self.hardware['uuid']} booting "
                 f"(init pid {os.getpid()})")
        os.makedirs(self.run, exist_ok=True)
        self.mounts()
        self.set_hostname("localhost", "default")
        script = os.path.join(self.run, "udhcpc.script")
        with open(script, "w") as f:
            f.write(UDHCPC_SCRIPT)
        os.chmod(script, 0o755)
        self.start_nics()
        leases = self.wait_leases()
        datasource, data = self.read_datasource(bool(leases))
        if data is not None:
            self.configure(datasource, data)
        else:
            self.say("cloud-init: no datasource found: host name and keys left unset")
        self.start_sshd()
        if data is not None:
            self.run_user_data(data.get("user_data"))
        names = ", ".join(f"{nic} {lease.get('ip', '?')}" for nic, lease in leases.items())
        self.say(f"cloud-init: finished at {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}"
                 f". Up {(uptime_cs() - self.started_cs) / 100:.2f} seconds")
        self.say(f"login: {socket.gethostname()} ready ({names or 'no address'})")
        with open(os.path.join(self.run, "ready"), "w") as f:     # its mtime: when
            f.write(socket.gethostname() + "\n")

    def mounts(self) -> None:
        """/root, /etc/resolv.conf and /etc/hostname are the instance's own (a private mount
        namespace: nothing of this is seen outside)."""
        for path in (self.root, os.path.join(self.root, ".ssh"), self.etc):
            os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        binds = [(self.root, "/root")]
        for name in ("resolv.conf", "hostname"):
            own = os.path.join(self.etc, name)
            if not os.path.exists(own):
                open(own, "w").close()
            if os.path.exists(f"/etc/{name}"):
                binds.append((own, f"/etc/{name}"))
        for source, target in binds:
            proc = subprocess.run(["mount", "--bind", source, target], capture_output=True,
                                  text=True, check=False)
            if proc.returncode != 0:
                self.say(f"mount {target}: {proc.stderr.strip()}")

    def set_hostname(self, name: str, origin: str) -> None:
        socket.sethostname(name)
        with open(os.path.join(self.etc, "hostname"), "w") as f:   # same inode: mounted
            f.write(name + "\n")
        if origin != "default":
            self.say(f"cloud-init: hostname set to {name} (from {origin})")

    # --- DHCP ---------------------------------------------------------------------------

    def nics(self) -> list[str]:
        try:
            names = os.listdir("/sys/class/net")
        except OSError:
            return []
        return sorted((n for n in names if re.fullmatch(r"eth\d+", n)),
                      key=lambda n: int(n[3:]))

    def start_nics(self) -> None:
        for nic in self.nics():
            if nic not in self.udhcpc:
                self.start_udhcpc(nic)

    def start_udhcpc(self, nic: str) -> None:
        subprocess.run(["ip", "link", "set", "dev", nic, "up"], check=False)
        env = {"PATH": PATH, "STACKLET_RUN": self.run,
               "STACKLET_RESOLV": os.path.join(self.etc, "resolv.conf")}
        # a DISCOVER a second (the port may still be on the dead VLAN for the first ones)
        proc = subprocess.Popen(
            ["udhcpc", "-f", "-i", nic, "-s", os.path.join(self.run, "udhcpc.script"),
             "-t", "3", "-T", "1", "-A", "1", "-O", "mtu", "-O", "staticroutes",
             "-O", "domain"], stdin=subprocess.DEVNULL, env=env, cwd="/")
        self.udhcpc[nic] = proc

    def lease(self, nic: str) -> dict | None:
        try:
            with open(os.path.join(self.run, f"lease.{nic}")) as f:
                return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        except OSError:
            return None

    def wait_leases(self) -> dict[str, dict]:
        """Until one NIC has a lease (LEASE_WAIT), then a little for the others."""
        nics = list(self.udhcpc)
        if not nics:
            self.say("no network interface")
            return {}
        deadline = time.monotonic() + LEASE_WAIT
        leases: dict[str, dict] = {}
        while not leases and time.monotonic() < deadline:
            leases = {n: lease for n in nics if (lease := self.lease(n))}
            if not leases:
                self.pause(0.02)
        if not leases:
            self.say(f"no DHCP lease within {LEASE_WAIT:.0f} s")
            return {}
        others = time.monotonic() + OTHER_LEASES_WAIT
        while len(leases) < len(nics) and time.monotonic() < others:
            self.pause(0.05)
            leases = {n: lease for n in nics if (lease := self.lease(n))}
        return leases

    # --- metadata -----------------------------------------------------------------------

    def read_datasource(self, network: bool) -> tuple[str, dict | None]:
        drive = os.path.join(self.dir, "config-drive", "openstack", "latest")
        if os.path.isfile(os.path.join(drive, "meta_data.json")):
            return "config drive", self.read_config_drive(drive)
        if not network:
            return "", None
        return f"{METADATA_URL}/openstack", self.read_metadata_service()

    def read_config_drive(self, drive: str) -> dict:
        data: dict = {}
        for name, key in (("meta_data.json", "meta"), ("network_data.json", "network"),
                          ("vendor_data.json", "vendor")):
            try:
                with open(os.path.join(drive, name)) as f:
                    data[key] = json.load(f)
            except (OSError, ValueError):
                pass
        try:
            with open(os.path.join(drive, "user_data"), "rb") as f:
                data["user_data"] = f.read()
        except OSError:
            data["user_data"] = None
        self.say(f"cloud-init: metadata read from the config drive (uuid "
                 f"{data['meta'].get('uuid')})")
        return data

    def fetch(self, path: str, timeout: float = 3.0) -> bytes | None:
        """GET path from the metadata service; None for a 404; raises for anything else."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{METADATA_URL}/{path}", timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def read_metadata_service(self) -> dict | None:
        """As cloud-init's OpenStack datasource: wait for the service, then read the tree."""
        deadline = time.monotonic() + METADATA_WAIT
        tries, last_said = 0, 0.0
        while True:
            tries += 1
            try:
                versions = self.fetch("openstack")
                if versions is not None:
                    break
                error = "404"
            except (OSError, urllib.error.URLError) as exc:
                error = str(getattr(exc, "reason", exc))
            now = time.monotonic()
            if now > deadline:
                self.say(f"cloud-init: url_helper: {METADATA_URL}/openstack failed after "
                         f"{tries} tries: {error}")
                return None
            if now - last_said > 5:
                self.say(f"cloud-init: url_helper: Calling '{METADATA_URL}/openstack' failed "
                         f"[{now - deadline + METADATA_WAIT:.0f}/{METADATA_WAIT:.0f}s]: {error}")
                last_said = now
            self.pause(min(0.2 * tries, 1.0))
        self.say(f"cloud-init: metadata service answered after {tries} "
                 f"tr{'y' if tries == 1 else 'ies'}")
        version = "latest" if b"latest" in versions.split() else versions.split()[-1].decode()
        data: dict = {}
        for name, key in (("meta_data.json", "meta"), ("network_data.json", "network"),
                          ("vendor_data.json", "vendor")):
            body = self.retry(f"openstack/{version}/{name}")
            if body is not None:
                data[key] = json.loads(body)
        if "meta" not in data:
            self.say(f"cloud-init: {METADATA_URL}/openstack/{version}/meta_data.json: 404")
            return None
        data["user_data"] = self.retry(f"openstack/{version}/user_data")
        data["ec2"] = self.read_ec2()
        self.save(data)
        self.say(f"cloud-init: metadata fetched from {METADATA_URL}/openstack/{version}/"
                 f"meta_data.json (uuid {data['meta'].get('uuid')}, instance-id "
                 f"{data['ec2'].get('instance-id', '?')}), user_data "
                 f"{'none (404)' if data['user_data'] is None else len(data['user_data'])}")
        return data

    def retry(self, path: str, tries: int = 5) -> bytes | None:
        for attempt in range(tries):
            try:
                return self.fetch(path)
            except (OSError, urllib.error.URLError) as exc:
                if attempt == tries - 1:
                    self.say(f"cloud-init: {METADATA_URL}/{path}: {exc}")
                    return None
                self.pause(0.2)
        return None

    def read_ec2(self) -> dict:
        """The EC2 meta-data tree (cloud-init's ec2_utils): leaves, directories to depth 3."""
        tree: dict = {}

        def walk(prefix: str, into: dict, depth: int) -> None:
            listing = self.retry(f"{EC2_VERSION}/meta-data/{prefix}")
            if listing is None:
                return
            for entry in listing.decode(errors="replace").split("\n"):
                entry = entry.strip()
                if not entry:
                    continue
                if prefix == "public-keys/":           # "0=name": the key is 0/openssh-key
                    number = entry.split("=", 1)[0]
                    key = self.retry(f"{EC2_VERSION}/meta-data/public-keys/{number}/"
                                     "openssh-key")
                    if key is not None:
                        into[entry.split("=", 1)[-1]] = key.decode(errors="replace").strip()
                elif entry.endswith("/"):
                    if depth < 3:
                        into[entry[:-1]] = {}
                        walk(prefix + entry, into[entry[:-1]], depth + 1)
                else:
                    value = self.retry(f"{EC2_VERSION}/meta-data/{prefix}{entry}")
                    if value is not None:
                        into[entry] = value.decode(errors="replace")

        walk("", tree, 0)
        return tree

    def save(self, data: dict) -> None:
        """What was read, for whoever looks at the instance (run/metadata/)."""
        where = os.path.join(self.run, "metadata")
        os.makedirs(where, exist_ok=True)
        for key in ("meta", "network", "vendor", "ec2"):
            if key in data:
                with open(os.path.join(where, f"{key}.json"), "w") as f:
                    json.dump(data[key], f, indent=1)

    # --- configuration from the metadata ------------------------------------------------

    def configure(self, origin: str, data: dict) -> None:
        meta = data["meta"]
        name = meta.get("hostname") or data.get("ec2", {}).get("local-hostname") \
            or meta.get("name") or ""
        short = sanitize_hostname(name.split(".")[0])
        if short:
            self.set_hostname(short, "meta_data.json" if origin != "config drive"
                              else "the config drive")
        self.install_keys(meta, data.get("ec2", {}))

    def install_keys(self, meta: dict, ec2: dict) -> None:
        keys: dict[str, str] = {}
        for name, key in (meta.get("public_keys") or {}).items():
            keys.setdefault(key.strip(), name)
        for entry in meta.get("keys") or []:
            if entry.get("type", "ssh") == "ssh" and entry.get("data"):
                keys.setdefault(entry["data"].strip(), entry.get("name", ""))
        for name, key in (ec2.get("public-keys") or {}).items():
            keys.setdefault(key.strip(), name)
        path = os.path.join(self.root, ".ssh", "authorized_keys")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{key}\n" for key in keys)
        if not keys:
            self.say("cloud-init: no public keys in the metadata")
        for key, name in keys.items():
            self.say(f"cloud-init: key installed for root: {name} ({fingerprint(key)})")

    # --- services -----------------------------------------------------------------------

    def start_sshd(self) -> None:
        keydir = os.path.join(self.etc, "dropbear")
        os.makedirs(keydir, mode=0o700, exist_ok=True)
        hostkey = os.path.join(keydir, "dropbear_ed25519_host_key")
        if not os.path.exists(hostkey):
            proc = subprocess.run(["dropbearkey", "-t", "ed25519", "-f", hostkey],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                self.say(f"dropbearkey: {proc.stderr.strip() or proc.stdout.strip()}")
                return
        pub = subprocess.run(["dropbearkey", "-y", "-f", hostkey], capture_output=True,
                             text=True, check=False).stdout
        line = next((ln for ln in pub.splitlines() if ln.startswith("ssh-")), "")
        if line:
            print("-----BEGIN SSH HOST KEY FINGERPRINTS-----", flush=True)
            print(fingerprint(line), flush=True)
            print("-----END SSH HOST KEY FINGERPRINTS-----", flush=True)
        try:
            with open(os.path.join(self.run, "dropbear.log"), "ab") as log:
                # -s -g: keys only; -r: the instance's host key (never /etc/dropbear's)
                self.sshd = subprocess.Popen(
                    ["dropbear", "-F", "-E", "-s", "-g", "-p", "22", "-r", hostkey,
                     "-P", os.path.join(self.run, "dropbear.pid")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    env={"PATH": PATH, "HOME": "/root"}, cwd="/")
        except OSError as exc:
            self.say(f"dropbear: {exc}")
            return
        self.say("dropbear: SSH server listening on port 22")

    def run_user_data(self, user_data: bytes | None) -> None:
        if not user_data:
            self.say("cloud-init: no user_data")
            return
        if not user_data.startswith(b"#!"):
            first = user_data.split(b"\n", 1)[0][:40].decode(errors="replace")
            self.say(f"cloud-init: user_data is not a script ({first!r}): ignored")
            return
        path = os.path.join(self.run, "user_data")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "wb") as f:
            f.write(user_data)
        self.say("cloud-init: running user_data script")
        try:
            proc = subprocess.Popen([path], stdin=subprocess.DEVNULL, cwd="/root",
                                    env={"PATH": PATH, "HOME": "/root", "USER": "root"})
        except OSError as exc:
            self.say(f"cloud-init: user_data: {exc}")
            return
        self.user_data_proc = proc
        while proc.poll() is None:
            self.pause(0.1)
        self.say(f"cloud-init: user_data script exited {proc.returncode}")
        self.user_data_proc = None

    # --- running ------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)     # SIGTERM's handler raises Shutdown out of it

    def handover(self) -> None:
        """Become the supervisor (a shell script: ~0.1 MiB instead of this interpreter's
        ~10): the same process keeps its children (the DHCP clients, dropbear), restarts
        them, gives new NICs a DHCP client and stops everything on SIGTERM."""
        for nic, proc in self.udhcpc.items():
            with open(os.path.join(self.run, f"pid.udhcpc.{nic}"), "w") as f:
                f.write(f"{proc.pid}\n")
        if self.sshd is not None:
            with open(os.path.join(self.run, "pid.dropbear"), "w") as f:
                f.write(f"{self.sshd.pid}\n")
        script = os.path.join(self.run, "supervisor")
        with open(script, "w") as f:
            f.write(SUPERVISOR)
        env = {"PATH": PATH, "STACKLET_RUN": self.run,
               "STACKLET_RESOLV": os.path.join(self.etc, "resolv.conf"),
               "STACKLET_START_CS": str(self.started_cs),
               "STACKLET_HOSTKEY": os.path.join(self.etc, "dropbear",
                                                "dropbear_ed25519_host_key")}
        sys.stdout.flush()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)     # Python ignores SIGPIPE: not its heirs
        os.execve("/bin/sh", ["sh", script], env)

    def shutdown(self) -> None:
        self.say("reboot: System halted: stopping services")
        procs = [p for p in (*self.udhcpc.values(), self.sshd, self.user_data_proc) if p]
        for proc in procs:
            try:
                proc.terminate()
            except OSError:
                pass
        deadline = time.monotonic() + 2
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        with open(os.path.join(self.run, "exit"), "w") as f:
            f.write("clean\n")
        self.say("reboot: Power down")


def uptime_cs() -> int:
    """The system's uptime in centiseconds (the console's clock, shared with the shell)."""
    with open("/proc/uptime") as f:
        return int(f.read().split()[0].replace(".", ""))


def sanitize_hostname(name: str) -> str:
    name = re.sub(r"[^a-z0-9-]", "-", name.lower())[:63]
    return name.strip("-")


def fingerprint(key_line: str) -> str:
    """``256 SHA256:… comment (ED25519)`` as ssh-keygen -l shows it (bits left out)."""
    parts = key_line.split()
    if len(parts) < 2:
        return "unparsable key"
    try:
        blob = base64.b64decode(parts[1])
    except ValueError:
        return "unparsable key"
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    kind = parts[0].removeprefix("ssh-").upper()
    comment = " ".join(parts[2:]) or "no comment"
    return f"SHA256:{digest} {comment} ({kind})"


def main(argv: list[str]) -> int:
    init = Init(argv[1])

    def power_button(signum, frame):
        raise Shutdown()

    signal.signal(signal.SIGTERM, power_button)
    signal.signal(signal.SIGINT, power_button)
    try:
        init.boot()
        init.handover()
    except Shutdown:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        init.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
