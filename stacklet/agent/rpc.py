"""The agent's side of the server ↔ agent contract: HTTP to ``/agent/v1`` (usually on a unix socket).

Calls: ``report_state`` (register, heartbeat), ``host_state`` (the host's desired state, by pages of differences from what the
agent holds),
``wait`` (long poll for change events), ``port_status`` (ports wired / gone),
``dhcp_ready`` (ports whose host entries the DHCP role has in place) and
``floatingip_status`` (floating IPs applied / dropped by the L3 role), ``instance_status``
(the compute role's instances), ``fetch_image`` (an image's data) and ``answer`` (the
result of a request the long poll carried, ``stacklet/bus/requests.py``). Bodies are the records
of ``stacklet/contract.py``; the snapshot is parsed here, once.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson

from stacklet.contract import (
    AgentAnswer,
    AgentReport,
    AgentRequest,
    ContractError,
    DhcpReadyReport,
    FloatingIpStatusReport,
    Holding,
    InstanceStatus,
    InstanceStatusReport,
    PortStatusReport,
    Revision,
    Snapshot,
    StatePage,
    requests_of,
)

PAGE_LIMIT = 1 << 20    # bytes of records per state page
MAX_PAGES = 1000


class ServerUnavailable(Exception):
    """The server did not answer; the dataplane keeps what it has and the agent retries."""


def fetch_state(get: Callable[[dict], bytes], holding: Holding,
                limit: int = PAGE_LIMIT) -> Snapshot:
    """Page ``GET /agent/v1/hosts/{host}/state`` (``get(params) -> body``) into ``holding``
    until a page says there is no more; the Snapshot the holding then makes. The one way to
    read a host's state (the agent, tools and tests alike): a page that does not parse makes
    the holding ask for everything next time."""
    for _ in range(MAX_PAGES):
        params: dict = {"limit": limit}
        if holding.token:
            params["token"] = holding.token
        if holding.epoch:
            params["epoch"] = holding.epoch
        try:
            snapshot = holding.apply(StatePage.from_json(get(params)))
        except ContractError:
            holding.forget()
            raise
        if snapshot is not None:
            return snapshot
    raise ServerUnavailable(f"the state of {holding.host} did not settle in {MAX_PAGES} "
                            "pages (changing faster than it is read?)")


class ServerClient:
    def __init__(self, url: str, host: str, timeout: float = 10.0,
                 secret: str | None = None) -> None:
        """``secret``: this node's credential (``api/node_auth.py``), sent over TCP."""
        self.host = host
        self._auth = (host, secret) if secret and not url.startswith("unix:") else None
        if url.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=url[len("unix:"):])
            base = "http://agent"
        else:
            transport = httpx.HTTPTransport()
            base = url.rstrip("/")
        self._transport = transport
        self._url = url
        self._base = f"{base}/agent/v1"
        self._timeout = timeout
        self._client = httpx.Client(transport=transport, base_url=self._base, timeout=timeout,
                                    auth=self._auth)
        # The long poll gets its own connection so it never delays a report.
        self._poll = httpx.Client(transport=httpx.HTTPTransport(uds=url[len("unix:"):])
                                  if url.startswith("unix:") else httpx.HTTPTransport(),
                                  base_url=self._base, timeout=timeout, auth=self._auth)

    def _new_transport(self) -> httpx.HTTPTransport:
        if self._url.startswith("unix:"):
            return httpx.HTTPTransport(uds=self._url[len("unix:"):])
        return httpx.HTTPTransport()

    def _send(self, client: httpx.Client, method: str, path: str, **kwargs) -> bytes:
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"{method} {path}: {exc}") from None
        if response.status_code >= 500:
            raise ServerUnavailable(f"{method} {path}: {response.status_code}")
        if response.status_code in (401, 403):
            # a missing, wrong or revoked node credential: say so, and keep retrying
            raise ServerUnavailable(f"{method} {path}: {response.status_code} "
                                    f"{response.text[:200]}")
        response.raise_for_status()
        return response.content

    def _call(self, client: httpx.Client, method: str, path: str, **kwargs) -> dict:
        content = self._send(client, method, path, **kwargs)
        return orjson.loads(content) if content else {}

    def _post(self, path: str, record) -> dict:
        return self._call(self._client, "POST", path, content=record.to_json(),
                          headers={"content-type": "application/json"})

    def report_state(self, report: AgentReport) -> str:
        return self._post("/report_state", report).get("id", "")

    def host_state(self, holding: Holding | None = None,
                   limit: int = PAGE_LIMIT) -> Snapshot:
        """The host's snapshot, by pages of differences from what ``holding`` holds (each
        applied to it as it comes; a page that does not parse makes the next call ask for
        everything). Without a holding, everything, in pages, into a new one."""
        return fetch_state(
            lambda params: self._send(self._client, "GET", f"/hosts/{self.host}/state",
                                      params=params),
            holding if holding is not None else Holding(self.host), limit)

    def wait(self, after: Revision, timeout: float
             ) -> tuple[Revision, tuple[AgentRequest, ...]]:
        """The host's change position once it passes ``after`` (or after ``timeout``, or as
        soon as the server has requests for this agent), and those requests."""
        params = {"after": after.seq, "timeout": timeout}
        if after.epoch:
            params["epoch"] = after.epoch
        answer = self._call(self._poll, "GET", f"/hosts/{self.host}/events",
                            params=params, timeout=timeout + 10)
        return Revision.from_json(answer), requests_of(answer)

    def current(self) -> Revision:
        """The host's change position now (the long poll, not waiting): what a waiter on
        the bus asks after each (re)connection (``bus/rabbit.py``)."""
        answer = self._call(self._client, "GET", f"/hosts/{self.host}/events",
                            params={"after": -1, "timeout": 0})
        return Revision.from_json(answer)

    def answer(self, answer: AgentAnswer) -> dict:
        """Post a request's result; its own connection (requests run in threads of their
        own, beside the loop's reports)."""
        with httpx.Client(transport=self._new_transport(), base_url=self._base,
                          timeout=self._timeout, auth=self._auth) as client:
            return self._call(client, "POST", f"/hosts/{self.host}/answers",
                              content=answer.to_json(),
                              headers={"content-type": "application/json"})

    def port_status(self, up: list[str], down: list[str],
                    revision: Revision = Revision(),
                    revisions: dict[str, int] | None = None) -> dict:
        return self._post(f"/hosts/{self.host}/port_status",
                          PortStatusReport(tuple(up), tuple(down), revision, revisions or {}))

    def dhcp_ready(self, ports: dict[str, int], revision: Revision = Revision()) -> dict:
        return self._post(f"/hosts/{self.host}/dhcp_ready", DhcpReadyReport(ports, revision))

    def floatingip_status(self, active: list[str], down: list[str],
                          revision: Revision = Revision()) -> dict:
        return self._post(f"/hosts/{self.host}/floatingip_status",
                          FloatingIpStatusReport(tuple(active), tuple(down), revision))

    def instance_status(self, statuses: list[InstanceStatus],
                        revision: Revision = Revision()) -> dict:
        return self._post(f"/hosts/{self.host}/instance_status",
                          InstanceStatusReport(tuple(statuses), revision))

    def fetch_image(self, image_id: str, dest) -> None:
        """Stream an image's data into ``dest`` (its own connection: images may be large)."""
        with httpx.Client(transport=self._new_transport(), base_url=self._base,
                          timeout=httpx.Timeout(60.0, connect=10.0), auth=self._auth) as client:
            try:
                with client.stream("GET", f"/images/{image_id}/file") as response:
                    if response.status_code != 200:
                        raise RuntimeError(f"image {image_id}: the server answered "
                                           f"{response.status_code}")
                    with open(dest, "wb") as out:
                        out.writelines(response.iter_bytes(1 << 20))
            except httpx.HTTPError as exc:
                raise ServerUnavailable(f"image {image_id}: {exc}") from None

    def upload_snapshot(self, image_id: str, source) -> None:
        """Stream a flattened disk (createImage) into its image (its own connection)."""
        def chunks():
            with open(source, "rb") as data:
                while chunk := data.read(1 << 20):
                    yield chunk

        with httpx.Client(transport=self._new_transport(), base_url=self._base,
                          timeout=httpx.Timeout(300.0, connect=10.0)) as client:
            try:
                response = client.put(f"/hosts/{self.host}/snapshots/{image_id}",
                                      content=chunks(),
                                      headers={"content-type": "application/octet-stream"})
            except httpx.HTTPError as exc:
                raise ServerUnavailable(f"snapshot {image_id}: {exc}") from None
            if response.status_code != 204:
                raise RuntimeError(f"snapshot {image_id}: the server answered "
                                   f"{response.status_code}: {response.text[:300]}")

    def close(self) -> None:
        self._client.close()
        self._poll.close()
