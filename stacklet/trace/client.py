"""The command line's side of ``stacklet trace``: the admin's credentials from the data
directory's ``clouds.yaml`` (``stacklet.admin_client``), ``POST /stacklet/v1/trace``,
and the answer printed as numbered hops in OpenStack terms (or as JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from stacklet.admin_client import AdminClient, AdminClientError

# a trace waits for each node's agent in turn (at most 15 s each)
TIMEOUT = 120.0


def request(data_dir: Path, body: dict) -> dict:
    with AdminClient(data_dir, timeout=TIMEOUT) as client:
        return client.post("/stacklet/v1/trace", {"trace": body})["trace"]


def render(trace: dict) -> str:
    packet = trace["packet"]
    ports = "" if packet["protocol"] == "icmp" else \
        f" {packet.get('sport') or 'any'} → {packet.get('dport')}"
    lines = [f"trace {packet['protocol']}{ports}: {packet['src_ip']} → {packet['dst_ip']}"]
    for hop in trace["hops"]:
        where = hop["where"]
        if hop["table"] is not None:
            where += f" table {hop['table']}"
        lines.append(f"{hop['n']:3}. [{hop['node']}] {where}: {hop['summary']}")
        if hop.get("purpose"):
            lines.append(f"       ({hop['purpose']}; cookie {hop['cookie']})")
    verdict = trace["verdict"].upper()
    lines.append(f"verdict: {verdict}" + (f": {trace['reason']}" if trace["reason"] else ""))
    return "\n".join(lines)


def main(data_dir: Path, src: str, dst: str, protocol: str, dport: int | None,
         sport: int | None, src_ip: str | None, as_json: bool) -> int:
    body = {"src": src, "dst": dst, "protocol": protocol, "dport": dport, "sport": sport}
    if src_ip:
        body["src_ip"] = src_ip
    try:
        trace = request(data_dir, body)
    except AdminClientError as exc:
        print(f"stacklet trace: {exc}")
        return 2
    print(json.dumps(trace, indent=2) if as_json else render(trace))
    return 0 if trace["verdict"] == "delivered" else 1
