"""Who the tenant-facing daemons run as, and where they read their files.

dnsmasq, haproxy and radvd parse packets from instances, so each runs without root once it
has bound its sockets (Neutron's choice for dnsmasq; haproxy is chrooted as well):

- dnsmasq ``--user``/``--group`` (``[dhcp] dnsmasq_user``/``dnsmasq_group``), radvd ``-u``
  (``[l3] radvd_user``), haproxy ``user``/``group``/``chroot`` in its configuration
  (``[metadata] metadata_proxy_user``/``metadata_proxy_group``);
- each writes its pid file as root before dropping privileges, but dnsmasq re-reads its host,
  options and addn-hosts files on SIGHUP and radvd its configuration, unprivileged. Those files
  cannot live under the data directory (0700: the database, passwords and signing secret are
  there), so they live under ``daemons_dir`` (``[agent] daemons_dir``, default
  ``/run/stacklet/<host>-<8 hex digits of the data dir's path>``: one per cloud), in
  directories ``0750 root:<daemon's group>``: the daemon reads,
  nobody else lists or reads, nobody but root writes.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

RUN_ROOT = Path("/run/stacklet")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


class AccountError(ValueError):
    pass


@dataclass(frozen=True)
class Account:
    """A daemon's user and group, resolved once (a missing one is a configuration error)."""

    user: str
    group: str
    uid: int
    gid: int

    @classmethod
    def of(cls, user: str, group: str | None = None) -> Account:
        """The account of ``user`` with ``group`` (default: the user's primary group);
        names or numbers."""
        try:
            pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise AccountError(f"no user {user!r} on this machine") from None
        if group:
            try:
                gr = grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
            except KeyError:
                raise AccountError(f"no group {group!r} on this machine") from None
        else:
            gr = grp.getgrgid(pw.pw_gid)
        return cls(pw.pw_name, gr.gr_name, pw.pw_uid, gr.gr_gid)


def daemons_dir(configured: str | None, host: str, data_dir: Path | str) -> Path:
    """``[agent] daemons_dir``, else ``/run/stacklet/<host>-<data dir's digest>``: one per
    cloud, since two clouds on one machine may give their nodes the same host name (each
    would take the other's dnsmasq and radvd files for its own, and its ``down`` end the
    other's daemons)."""
    if configured:
        return Path(configured)
    if not _HOST.match(host):
        raise AccountError(f"host {host!r} cannot name a directory; set [agent] daemons_dir")
    return RUN_ROOT / f"{host[:200]}-{data_dir_digest(data_dir)}"


def data_dir_digest(data_dir: Path | str) -> str:
    """Eight hex digits naming a data directory (its resolved path, as the configuration
    holds it) in places the clouds of a machine share."""
    return hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:8]


def legacy_daemons_dir(configured: str | None, host: str) -> Path | None:
    """Where versions before the per-cloud daemons dir kept the files
    (``/run/stacklet/<host>``), when that default applies: the dnsmasq and radvd of a router
    or network this cloud adopts are ended from there (None: configured, nothing moved)."""
    if configured or not _HOST.match(host):
        return None
    return RUN_ROOT / host


def group_dir(path: Path, gid: int) -> Path:
    """``path`` as a directory ``0750 root:<gid>``, its missing parents ``0755 root``: the
    daemon's group can read what is inside, others cannot even list it."""
    for parent in reversed(path.parents):
        if not parent.exists():
            parent.mkdir(mode=0o755)
            os.chmod(parent, 0o755)
    path.mkdir(mode=0o750, exist_ok=True)
    st = path.stat()
    if (st.st_uid, st.st_gid) != (0, gid):
        os.chown(path, 0, gid)
    if st.st_mode & 0o7777 != 0o750:
        os.chmod(path, 0o750)
    return path
