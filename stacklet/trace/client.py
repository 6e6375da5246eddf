"""The command line's side of ``stacklet trace``: the admin's credentials from the data
directory's ``clouds.yaml`` (cloud ``stacklet-admin``), a token, ``POST /stacklet/v1/trace``,
and the answer printed as numbered hops in OpenStack terms (or as JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml

ADMIN_CLOUD = "stacklet-admin"


class TraceError(Exception):
    pass


def _token(auth: dict) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": auth["username"], "password": auth["password"],
        "domain": {"name": auth.get("user_domain_name", "Default")}}}},
        "scope": {"project": {"name": auth["project_name"],
                              "domain": {"name": auth.get("project_domain_name", "Default")}}}}}
    response = httpx.post(auth["auth_url"].rstrip("/") + "/auth/tokens", json=body, timeout=30)
    if response.status_code != 201:
        raise TraceError(f"login as {auth['username']} failed: {response.status_code} "
                         f"{response.text[:300]}")
    return response.headers["x-subject-token"]


def request(clouds_yaml: Path, body: dict, timeout: float = 120) -> dict:
    try:
        clouds = yaml.safe_load(clouds_yaml.read_text())
        auth = clouds["clouds"][ADMIN_CLOUD]["auth"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise TraceError(f"no admin credentials in {clouds_yaml}: {exc}") from None
    base = auth["auth_url"].rstrip("/").removesuffix("/identity/v3")
    try:
        token = _token(auth)
        response = httpx.post(f"{base}/stacklet/v1/trace", json={"trace": body},
                              headers={"X-Auth-Token": token}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise TraceError(f"the server at {base} did not answer: {exc}") from None
    if response.status_code != 200:
        try:
            error = response.json()["NeutronError"]
            message = f"{error['type']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        raise TraceError(f"{response.status_code} {message}")
    return response.json()["trace"]


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


def main(clouds_yaml: Path, src: str, dst: str, protocol: str, dport: int | None,
         sport: int | None, src_ip: str | None, as_json: bool) -> int:
    body = {"src": src, "dst": dst, "protocol": protocol, "dport": dport, "sport": sport}
    if src_ip:
        body["src_ip"] = src_ip
    try:
        trace = request(clouds_yaml, body)
    except TraceError as exc:
        print(f"stacklet trace: {exc}")
        return 2
    print(json.dumps(trace, indent=2) if as_json else render(trace))
    return 0 if trace["verdict"] == "delivered" else 1
