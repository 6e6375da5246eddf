"""The agent's side of the server ↔ agent contract: HTTP to ``/agent/v1`` (usually on a unix socket).

Calls: ``report_state`` (register, heartbeat), ``host_state`` (the host's desired state),
``wait`` (long poll for change events), ``port_status`` (ports wired / gone) and
``floatingip_status`` (floating IPs applied / dropped by the L3 role).
"""

from __future__ import annotations

import httpx


class ServerUnavailable(Exception):
    """The server did not answer; the dataplane keeps what it has and the agent retries."""


class ServerClient:
    def __init__(self, url: str, host: str, timeout: float = 10.0) -> None:
        self.host = host
        if url.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=url[len("unix:"):])
            base = "http://agent"
        else:
            transport = httpx.HTTPTransport()
            base = url.rstrip("/")
        self._transport = transport
        self._base = f"{base}/agent/v1"
        self._timeout = timeout
        self._client = httpx.Client(transport=transport, base_url=self._base, timeout=timeout)
        # The long poll gets its own connection so it never delays a report.
        self._poll = httpx.Client(transport=httpx.HTTPTransport(uds=url[len("unix:"):])
                                  if url.startswith("unix:") else httpx.HTTPTransport(),
                                  base_url=self._base, timeout=timeout)

    def _call(self, client: httpx.Client, method: str, path: str, **kwargs) -> dict:
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"{method} {path}: {exc}") from None
        if response.status_code >= 500:
            raise ServerUnavailable(f"{method} {path}: {response.status_code}")
        response.raise_for_status()
        return response.json() if response.content else {}

    def report_state(self, configurations: dict, start_flag: bool,
                     agent_type: str = "Open vSwitch agent",
                     binary: str = "stacklet-openvswitch-agent", topic: str = "N/A") -> str:
        body = {"agent_type": agent_type, "binary": binary, "topic": topic, "host": self.host,
                "configurations": configurations, "availability_zone": "nova",
                "start_flag": start_flag}
        return self._call(self._client, "POST", "/report_state", json=body).get("id", "")

    def host_state(self) -> dict:
        return self._call(self._client, "GET", f"/hosts/{self.host}/state")

    def wait(self, epoch: str | None, after: int, timeout: float) -> dict:
        params = {"after": after, "timeout": timeout}
        if epoch:
            params["epoch"] = epoch
        return self._call(self._poll, "GET", f"/hosts/{self.host}/events", params=params,
                          timeout=timeout + 10)

    def port_status(self, up: list[str], down: list[str]) -> dict:
        return self._call(self._client, "POST", f"/hosts/{self.host}/port_status",
                          json={"up": up, "down": down})

    def floatingip_status(self, active: list[str], down: list[str]) -> dict:
        return self._call(self._client, "POST", f"/hosts/{self.host}/floatingip_status",
                          json={"active": active, "down": down})

    def close(self) -> None:
        self._client.close()
        self._poll.close()
