"""A host's snapshot as pages of differences from what its agent holds (``StatePage``).

Level-triggered and kept in the database, so any server process can answer any page:

1. the host's snapshot is built (``host_state``) in one read transaction together with its
   revision (``bus.revisions``), and cut into records (``contract.snapshot_records``), each
   serialized once and hashed;
2. what the agent holds is the record hashes stored under the token it sends
   (``host_holdings``); none (no token: the agent starts; another epoch; a token the server no
   longer keeps: the agent is too far behind) means it holds nothing: the page resets;
3. the difference (records added or changed, keys removed), in key order, goes out up to
   ``limit`` bytes; what did not fit comes with the next page (``more``);
4. what the agent holds after the page is stored under a new token (the token it sent is
   kept too, in case this answer is lost; older ones go). A page with no difference keeps the
   agent's token and writes nothing.

A wake-up that did not concern the host (over-notified) thus costs one build and an empty
page; a port that changed costs its few records, whatever the number of ports on the host.

One build per fetch: a fetch of several pages (``more``) is served from the records built
for its first page, kept in this process (``_Fetch``) under the token each page hands out,
for ``FETCH_TTL`` seconds, as long as the host's revision has not moved (then the page is
built anew, as every page was before: a page is never older than the revision the host had
when it was asked). A page landing on another server process builds anew there: correct,
only slower. What the agent holds after each page is kept in memory too (the DB row is
still written, for the other processes), so a wake does not read it back from the database.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass, field

import orjson
from sqlalchemy import delete
from sqlalchemy.orm import Session

from stacklet.bus import revisions
from stacklet.contract import VERSION, Revision, snapshot_records
from stacklet.services.networking.host_state import host_state
from stacklet.store.models.bus import HostHolding

DEFAULT_LIMIT = 1 << 20     # bytes of records per page
MIN_LIMIT, MAX_LIMIT = 1 << 10, 16 << 20


@dataclass
class Page:
    body: bytes
    reset: bool
    records: int        # records sent
    total: int          # records in the snapshot
    more: bool
    hashes: dict[str, str] | None    # what the agent holds once it applied the page (to store)
    token: str
    kept: str | None                 # the agent's token, kept beside the new one


FETCH_TTL = 30.0    # seconds the records built for a paged fetch wait for its next page


@dataclass
class _Fetch:
    """A host's records as built for a fetch's first page, for its next pages."""

    epoch: str
    revision: Revision
    encoded: dict[str, bytes]
    hashes: dict[str, str]
    until: float
    tokens: set[str] = field(default_factory=set)   # handed out by its pages with ``more``


@dataclass
class _Host:
    fetch: _Fetch | None = None
    held: tuple[str, str, dict[str, str]] | None = None   # (epoch, token, hashes) last given


_HOSTS: dict[str, _Host] = {}
_LOCK = threading.Lock()


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _build(session: Session, host: str, epoch: str) -> _Fetch:
    seq = revisions.read(session, [host])[host]
    revision = Revision(epoch, seq)
    snapshot = host_state(session, host, revision)
    encoded = {key: orjson.dumps(record) for key, record in
               snapshot_records(snapshot).items()}
    return _Fetch(epoch, revision, encoded, {key: _digest(data) for key, data in encoded.items()},
                  time.monotonic() + FETCH_TTL)


def _remembered(host: str, epoch: str, token: str | None
                ) -> tuple[_Fetch | None, dict[str, str] | None]:
    """The build of the fetch ``token`` continues, and what ``token`` holds, when this
    process handed it out (else None for either)."""
    with _LOCK:
        state = _HOSTS.get(host)
        if state is None or not token:
            return None, None
        fetch = state.fetch
        if fetch is not None and (fetch.epoch != epoch or token not in fetch.tokens or
                                  time.monotonic() > fetch.until):
            fetch = None
        held = state.held[2] if state.held is not None and \
            state.held[:2] == (epoch, token) else None
        return fetch, held


def _remember(host: str, fetch: _Fetch, page: Page) -> None:
    with _LOCK:
        state = _HOSTS.setdefault(host, _Host())
        if page.more:
            fetch.tokens.add(page.token)
            state.fetch = fetch
        elif state.fetch is fetch or (state.fetch is not None and
                                      time.monotonic() > state.fetch.until):
            state.fetch = None
        if page.hashes is not None:
            state.held = (fetch.epoch, page.token, page.hashes)


def forget(host: str | None = None) -> None:
    """Drop what this process keeps of a host's fetches (every host: None)."""
    with _LOCK:
        if host is None:
            _HOSTS.clear()
        else:
            _HOSTS.pop(host, None)


def build_page(session: Session, host: str, epoch: str, agent_epoch: str | None,
               token: str | None, limit: int = DEFAULT_LIMIT) -> Page:
    """The next page for the agent holding ``token`` (read-only: the caller stores
    ``Page.hashes`` under ``Page.token`` when they are not None)."""
    fetch, held = _remembered(host, epoch, token) if agent_epoch == epoch else (None, None)
    if fetch is not None and revisions.read(session, [host])[host] != fetch.revision.seq:
        fetch = None    # changed since its first page: the last page is never older than that
    if fetch is None:
        fetch = _build(session, host, epoch)
    if held is None and token and agent_epoch == epoch:
        row = session.get(HostHolding, (host, token))
        held = row.hashes if row is not None else None
    revision, encoded, hashes = fetch.revision, fetch.encoded, fetch.hashes
    reset = held is None
    base = {} if held is None else held
    removed = sorted(k for k in base if k not in hashes)
    changed = sorted(k for k, h in hashes.items() if base.get(k) != h)

    limit = max(MIN_LIMIT, min(int(limit), MAX_LIMIT))
    size, taken_removed, taken = 0, [], []
    for key in removed:
        if size and size + len(key) + 3 > limit:
            break
        taken_removed.append(key)
        size += len(key) + 3
    more = len(taken_removed) < len(removed)
    if not more:
        for key in changed:
            cost = len(key) + 4 + len(encoded[key])
            if size and size + cost > limit:
                more = True
                break
            taken.append(key)
            size += cost
    if not reset and not taken_removed and not taken:
        new_token, holding = token, None        # nothing changed: nothing to store
    else:
        new_token = uuid.uuid4().hex
        if not more:
            holding = hashes
        else:
            gone = set(taken_removed)
            holding = {k: h for k, h in base.items() if k not in gone}
            holding.update({k: hashes[k] for k in taken})
    parts = [b'{"version":', str(VERSION).encode(), b',"host":', orjson.dumps(host),
             b',"revision":', orjson.dumps(revision), b',"token":', orjson.dumps(new_token),
             b',"reset":', b"true" if reset else b"false",
             b',"more":', b"true" if more else b"false",
             b',"removed":', orjson.dumps(taken_removed), b',"changed":{']
    parts.append(b",".join(orjson.dumps(k) + b":" + encoded[k] for k in taken))
    parts.append(b"}}")
    page = Page(b"".join(parts), reset, len(taken), len(hashes), more, holding,
                new_token or "", None if reset else token)
    _remember(host, fetch, page)
    return page


def store_holding(session: Session, host: str, page: Page, seq: int = 0) -> None:
    """Keep what the agent holds after ``page`` (and the holding it came from), nothing older."""
    keep = [t for t in (page.token, page.kept) if t]
    session.execute(delete(HostHolding).where(HostHolding.host == host,
                                              HostHolding.token.not_in(keep)))
    session.add(HostHolding(host=host, token=page.token, seq=seq, hashes=page.hashes))
