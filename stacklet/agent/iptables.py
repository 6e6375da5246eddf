"""One iptables table of a namespace, written whole and compared cheaply.

Rules are written as ``iptables-save`` prints them (``-A chain ...``), so comparing what a
namespace holds with what a role wants is one ``iptables-save -t <table>``; only a difference
costs an ``iptables-restore`` of that table (atomic; conntrack entries untouched).
"""

from __future__ import annotations

from collections.abc import Sequence

from stacklet import linux

BUILTIN = {"nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
           "filter": ("INPUT", "FORWARD", "OUTPUT")}


def restore_text(table: str, rules: Sequence[str], chains: Sequence[str] = ()) -> str:
    """The table for ``iptables-restore``: built-in chains ACCEPT, ``chains`` (and those the
    rules append to) declared, then the rules."""
    builtin = BUILTIN[table]
    own = list(dict.fromkeys([*chains, *(r.split()[1] for r in rules)]))
    lines = [f"*{table}", *(f":{c} ACCEPT [0:0]" for c in builtin),
             *(f":{c} - [0:0]" for c in sorted(own) if c not in builtin), *rules, "COMMIT", ""]
    return "\n".join(lines)


def saved_rules(ns: str, table: str) -> list[str]:
    saved = linux.run(["ip", "netns", "exec", ns, "iptables-save", "-t", table],
                      check=False).stdout
    return [line for line in saved.splitlines() if line.startswith("-A ")]


def ensure(ns: str, table: str, rules: Sequence[str], text: str | None = None) -> bool:
    """Make the namespace's table hold exactly ``rules``; True when it had to be written."""
    if saved_rules(ns, table) == list(rules):
        return False
    linux.run(["ip", "netns", "exec", ns, "iptables-restore"],
              input=text if text is not None else restore_text(table, rules))
    return True
