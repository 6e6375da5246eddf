"""Remote consoles, as Nova hands them out: a URL to the noVNC page with a one-instance,
expiring token, and the token's check by the console proxy (``api/console_proxy.py``).

Nova's order of checks for ``get_vnc_console`` is kept: the server is found (404), it has a
host (409 "not ready"), it is not being deleted (409 task_state), the node can serve the
protocol (400 "Unavailable console type", 501 for a driver without consoles: netns), the type
is the protocol's (400 "Invalid console type"), the console is there (409 "not ready" while the
instance does not run). The token (a UUID, as Nova's) is stored only as its SHA-256, with where
the console is; it expires after ``[consoleauth] token_ttl``. The proxy accepts it only while
the instance exists and its console is still where the token says.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import delete, select

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.contract import COMPUTE_AGENT
from stacklet.services.compute import policy
from stacklet.services.compute import states as st
from stacklet.store.models.agents import Agent
from stacklet.store.models.consoles import ConsoleAuthToken
from stacklet.store.models.servers import Instance

# what each protocol's types are (Nova's schema up to 2.98: mks/webmks from 2.8)
PROTOCOLS = ["vnc", "spice", "serial", "rdp"]
TYPES = ["novnc", "xvpvnc", "spice-html5", "serial", "rdp-html5"]
PROTOCOLS_28 = PROTOCOLS + ["mks"]
TYPES_28 = TYPES + ["webmks"]
# the tasks during which Nova refuses a console (reject_instance_state)
BUSY_TASKS = ("deleting", "migrating")
DRIVERS_WITHOUT_CONSOLES = ("netns",)


class FeatureNotSupported(errors.StackletError):
    """nova.api.openstack.common.raise_feature_not_supported (501)."""
    status = 501
    message = "The requested functionality is not supported."


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    """Where the proxy connects for a valid token."""
    instance_uuid: str
    host: str
    port: int | None
    path: str | None


class ConsoleService:
    def __init__(self, services) -> None:
        self.services = services
        self.db = services.db
        self.conf = services.conf

    # --- handing out URLs -----------------------------------------------------------------------

    def url(self, ctx: RequestContext, server_id: str, protocol: str, console_type: str,
            base_url: str) -> str:
        """A console URL for ``protocol``/``console_type`` (validated by the caller against
        the schema); ``base_url`` the noVNC page when ``[vnc] novncproxy_base_url`` is unset."""
        row = self.services.compute.servers.get(ctx, server_id)
        policy.any_project(ctx, "os-remote-consoles")
        if not ctx.is_admin and not ctx.can_write:
            raise errors.ComputePolicyNotAuthorized(action="os_compute_api:os-remote-consoles")
        if protocol == "rdp":
            raise errors.BadRequest(f"Unavailable console type {protocol}.")
        if not row.host:
            raise errors.Conflict(f"Instance {row.id} is not ready")
        if row.task_state in BUSY_TASKS:
            raise errors.Conflict(f"Cannot 'get_{protocol}_console' instance {row.id} while "
                                  f"it is in task_state {row.task_state}")
        if protocol != "vnc":
            # the node serves no SPICE, serial or MKS console (Nova's [spice]/[serial_console]/
            # [mks] enabled = false)
            raise errors.BadRequest(f"Unavailable console type {console_type}.")
        driver = self._driver(row.host)
        if driver in DRIVERS_WITHOUT_CONSOLES:
            if console_type != "novnc":
                raise errors.BadRequest(f"Invalid console type {console_type}")
            raise FeatureNotSupported()
        if console_type != "novnc":
            raise errors.BadRequest(f"Invalid console type {console_type}")
        console = row.console
        if not console:
            if row.vm_state == st.ACTIVE and row.task_state is None and \
                    row.power_state == st.RUNNING and driver is not None:
                # running, but the node reports no VNC server ([vnc] enabled = false there)
                raise errors.BadRequest(f"Unavailable console type {console_type}.")
            raise errors.Conflict(f"Instance {row.id} is not ready")
        token = str(uuid.uuid4())
        access_url_base = str(self.conf.vnc.novncproxy_base_url or base_url)
        now = time.time()

        def write(session) -> None:
            session.execute(delete(ConsoleAuthToken).where(ConsoleAuthToken.expires < now))
            session.add(ConsoleAuthToken(
                token_hash=_hash(token), console_type=console_type,
                host=str(console.get("host") or row.host), port=console.get("port"),
                internal_access_path=console.get("path"), instance_uuid=row.id,
                access_url_base=access_url_base,
                expires=now + int(self.conf.consoleauth.token_ttl)))
        self.db.retrying(write)
        # Nova's access_url for novnc: the token inside noVNC's `path` parameter
        return f"{access_url_base}?{urlencode({'path': f'?token={token}'})}"

    def _driver(self, host: str) -> str | None:
        with self.db.read() as session:
            agent = session.scalar(select(Agent).where(Agent.agent_type == COMPUTE_AGENT,
                                                       Agent.host == host))
            if agent is None:
                return None
            return str((agent.configurations or {}).get("driver") or "") or None

    # --- checking tokens ------------------------------------------------------------------------

    def _valid(self, session, token: str) -> tuple[ConsoleAuthToken, Instance] | None:
        if not token or len(token) > 255:
            return None
        found = session.scalar(select(ConsoleAuthToken).where(
            ConsoleAuthToken.token_hash == _hash(token)))
        if found is None or found.expires <= time.time():
            return None
        instance = session.get(Instance, found.instance_uuid)
        if instance is None or instance.deleted or instance.task_state == st.DELETING:
            return None
        return found, instance

    def target(self, token: str) -> Target | None:
        """Where to connect for ``token``, or None: unknown, expired, the instance deleted
        (or being deleted), or its console no longer where the token was made for (stopped, restarted)."""
        with self.db.read() as session:
            valid = self._valid(session, token)
            if valid is None:
                return None
            found, instance = valid
            console: dict[str, Any] = instance.console or {}
            if found.internal_access_path:
                if console.get("path") != found.internal_access_path:
                    return None
            elif (console.get("host"), console.get("port")) != (found.host, found.port):
                return None
            return Target(found.instance_uuid, found.host, found.port,
                          found.internal_access_path)

    def show_token(self, ctx: RequestContext, token: str) -> dict[str, Any]:
        """``GET /os-console-auth-tokens/{token}`` (admin)."""
        policy.admin(ctx, "os-console-auth-tokens")
        if not token:
            raise errors.BadRequest("token not provided")
        with self.db.read() as session:
            valid = self._valid(session, token)
            if valid is None:
                raise errors.NotFound("Token not found")
            found = valid[0]
            return {"instance_uuid": found.instance_uuid, "host": found.host,
                    "port": found.port, "internal_access_path": found.internal_access_path}
