"""Which rule of a qrouter- namespace's nat table applies to a packet.

A small evaluator for the rules the L3 role writes (``agent/l3/router.py``), read back with
``iptables-save -t nat``: matches ``-s``/``-d`` (CIDR), ``-i``/``-o`` (``+`` wildcard),
``-p``, ``--dport``, ``-m conntrack --ctstate DNAT``, each optionally negated with ``!``;
targets ``-j <chain>`` (jump), ``ACCEPT``, ``RETURN``, ``DNAT``, ``SNAT``, ``REDIRECT``.
A rule with any other option never matches (it is reported as not understood), so the
answer errs towards "no NAT" rather than inventing one.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

TERMINAL = ("ACCEPT", "DNAT", "SNAT", "REDIRECT", "MASQUERADE", "DROP")


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    protocol: str
    dport: int | None
    in_dev: str | None
    out_dev: str | None = None
    dnat: bool = False          # conntrack state DNAT (a PREROUTING DNAT applied)


def _iface(pattern: str, dev: str | None) -> bool:
    if dev is None:
        return False
    return dev.startswith(pattern[:-1]) if pattern.endswith("+") else dev == pattern


def _matches(opts: list[str], p: Packet) -> bool | None:
    """True/False, or None for an option this evaluator does not know."""
    i, negate = 0, False
    while i < len(opts):
        opt = opts[i]
        if opt == "!":
            negate, i = True, i + 1
            continue
        value = opts[i + 1] if i + 1 < len(opts) else ""
        if opt in ("-s", "-d"):
            addr = p.src if opt == "-s" else p.dst
            ok = ipaddress.ip_address(addr) in ipaddress.ip_network(value, strict=False)
        elif opt in ("-i", "-o"):
            ok = _iface(value, p.in_dev if opt == "-i" else p.out_dev)
        elif opt == "-p":
            ok = p.protocol == value
        elif opt == "-m":
            i += 2
            continue
        elif opt == "--dport":
            ok = p.dport is not None and str(p.dport) == value
        elif opt == "--ctstate":
            ok = p.dnat if value == "DNAT" else False
        else:
            return None
        if ok == negate:
            return False
        negate, i = False, i + 2
    return True


def _parse(rule: str) -> tuple[str, list[str], str, list[str]]:
    words = shlex.split(rule)
    chain = words[1]
    j = words.index("-j")
    return chain, words[2:j], words[j + 1], words[j + 2:]


def evaluate(rules: list[str], chain: str, p: Packet, depth: int = 0) -> dict | None:
    """The first terminal rule that the packet meets from ``chain``:
    ``{"rule", "target", "to", "chain"}``, or None (the chain's policy, ACCEPT: no NAT)."""
    if depth > 10:
        return None
    for rule in rules:
        try:
            rchain, opts, target, args = _parse(rule)
        except (ValueError, IndexError):
            continue
        if rchain != chain or _matches(opts, p) is not True:
            continue
        if target == "RETURN":
            return None
        if target in TERMINAL:
            to = args[1] if len(args) > 1 and args[0].startswith("--to") else None
            return {"rule": rule, "target": target, "to": to, "chain": rchain}
        found = evaluate(rules, target, p, depth + 1)
        if found is not None:
            return found
    return None
