"""What a validated token means, and the in-process cache that makes validation cheap.

Every API request validates its token, so a cache hit must cost a dictionary lookup and a clock
read. Entries live ``[token] cache_time`` seconds. Whatever revokes or narrows a token (token
revocation, a user disabled, deleted or given a new password, a role assignment removed, a project
or domain disabled or deleted) calls ``drop()`` after its transaction commits; ``drop()`` also
bumps a generation counter so that a validation which read the old state concurrently does not put
a stale entry back.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from stacklet.context import RequestContext

UNSCOPED, PROJECT, DOMAIN, SYSTEM = "unscoped", "project", "domain", "system"


@dataclass(frozen=True)
class Scope:
    kind: str = UNSCOPED
    id: str | None = None  # project or domain id; "all" for system scope
    name: str | None = None
    domain_id: str | None = None  # the project's domain (project scope)
    domain_name: str | None = None


@dataclass(frozen=True)
class AppCredRef:
    """The application credential a token was issued for (Keystone's ``application_credential``
    in the token body)."""

    id: str
    name: str
    unrestricted: bool


@dataclass(frozen=True)
class TokenInfo:
    user_id: str
    user_name: str
    user_domain_id: str
    user_domain_name: str
    methods: tuple[str, ...]
    audit_ids: tuple[str, ...]
    issued_at: datetime.datetime
    expires_at: datetime.datetime
    scope: Scope
    roles: tuple[tuple[str, str], ...] = ()  # effective (id, name), implied roles included
    app_cred: AppCredRef | None = None

    @property
    def expires_ts(self) -> float:
        return self.expires_at.replace(tzinfo=datetime.UTC).timestamp()

    def touches_domain(self, domain_id: str) -> bool:
        return domain_id in (self.user_domain_id, self.scope.domain_id) or (
            self.scope.kind == DOMAIN and self.scope.id == domain_id)

    def context(self, token_id: str) -> RequestContext:
        scope = self.scope
        return RequestContext(
            user_id=self.user_id,
            project_id=scope.id if scope.kind == PROJECT else None,
            roles=frozenset(name for _, name in self.roles),
            user_name=self.user_name,
            project_name=scope.name if scope.kind == PROJECT else None,
            domain_id=scope.id if scope.kind == DOMAIN else None,
            user_domain_id=self.user_domain_id,
            system_scope=scope.kind == SYSTEM,
            token_id=token_id,
            expires_at=self.expires_ts,
            audit_id=self.audit_ids[0],
        )


@dataclass(frozen=True)
class Entry:
    info: TokenInfo
    context: RequestContext
    fresh_until: float  # time.monotonic() deadline
    expires_ts: float  # time.time() of the token's expiry


class TokenCache:
    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self.generation = 0
        # called after each drop (the RabbitMQ bus tells the other server processes, which
        # drop their entries too: bus/rabbit.py, api/app.py)
        self.on_drop: Callable[[], None] | None = None

    def get(self, token_id: str) -> Entry | None:
        entry = self._entries.get(token_id)
        if entry is None:
            return None
        if time.monotonic() >= entry.fresh_until or time.time() >= entry.expires_ts:
            self._entries.pop(token_id, None)
            return None
        return entry

    def put(self, token_id: str, info: TokenInfo, generation: int) -> Entry:
        """Remember ``info`` unless something was dropped since ``generation`` was read."""
        entry = Entry(info, info.context(token_id), time.monotonic() + self.ttl, info.expires_ts)
        if self.ttl <= 0:
            return entry
        with self._lock:
            if generation != self.generation:
                return entry
            if len(self._entries) >= self.max_entries:
                self._evict()
            self._entries[token_id] = entry
        return entry

    def _evict(self) -> None:
        now_mono, now = time.monotonic(), time.time()
        for key, entry in list(self._entries.items()):
            if now_mono >= entry.fresh_until or now >= entry.expires_ts:
                del self._entries[key]
        overflow = len(self._entries) - self.max_entries // 2
        for key in list(self._entries)[:max(overflow, 0)]:
            del self._entries[key]

    def drop(self, predicate: Callable[[TokenInfo], bool] | None = None, *,
             announce: bool = True) -> None:
        """Forget every entry whose token matches ``predicate`` (all entries when None);
        ``announce``: tell ``on_drop`` (the other server processes)."""
        with self._lock:
            self.generation += 1
            if predicate is None:
                self._entries.clear()
            else:
                for key, entry in list(self._entries.items()):
                    if predicate(entry.info):
                        del self._entries[key]
        if announce and self.on_drop is not None:
            self.on_drop()

    # Predicates for the usual revocation reasons.
    def drop_user(self, user_id: str) -> None:
        self.drop(lambda info: info.user_id == user_id)

    def drop_project(self, project_id: str) -> None:
        self.drop(lambda info: info.scope.kind == PROJECT and info.scope.id == project_id)

    def drop_domain(self, domain_id: str) -> None:
        self.drop(lambda info: info.touches_domain(domain_id))

    def drop_app_cred(self, app_cred_id: str) -> None:
        self.drop(lambda info: info.app_cred is not None and info.app_cred.id == app_cred_id)

    def drop_audit(self, audit_id: str) -> None:
        self.drop(lambda info: audit_id in info.audit_ids)

    def __len__(self) -> int:
        return len(self._entries)
