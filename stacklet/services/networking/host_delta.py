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
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

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


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def build_page(session: Session, host: str, epoch: str, agent_epoch: str | None,
               token: str | None, limit: int = DEFAULT_LIMIT) -> Page:
    """The next page for the agent holding ``token`` (read-only: the caller stores
    ``Page.hashes`` under ``Page.token`` when they are not None)."""
    seq = revisions.read(session, [host])[host]
    revision = Revision(epoch, seq)
    snapshot = host_state(session, host, revision)
    held = None
    if token and agent_epoch == epoch:
        row = session.get(HostHolding, (host, token))
        held = row.hashes if row is not None else None
    encoded = {key: orjson.dumps(record) for key, record in
               snapshot_records(snapshot).items()}
    hashes = {key: _digest(data) for key, data in encoded.items()}
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
            holding = {k: h for k, h in base.items() if k not in set(taken_removed)}
            holding.update({k: hashes[k] for k in taken})
    parts = [b'{"version":', str(VERSION).encode(), b',"host":', orjson.dumps(host),
             b',"revision":', orjson.dumps(revision), b',"token":', orjson.dumps(new_token),
             b',"reset":', b"true" if reset else b"false",
             b',"more":', b"true" if more else b"false",
             b',"removed":', orjson.dumps(taken_removed), b',"changed":{']
    parts.append(b",".join(orjson.dumps(k) + b":" + encoded[k] for k in taken))
    parts.append(b"}}")
    return Page(b"".join(parts), reset, len(taken), len(hashes), more, holding,
                new_token or "", None if reset else token)


def store_holding(session: Session, host: str, page: Page, seq: int = 0) -> None:
    """Keep what the agent holds after ``page`` (and the holding it came from), nothing older."""
    keep = [t for t in (page.token, page.kept) if t]
    session.execute(delete(HostHolding).where(HostHolding.host == host,
                                              HostHolding.token.not_in(keep)))
    session.add(HostHolding(host=host, token=page.token, seq=seq, hashes=page.hashes))
