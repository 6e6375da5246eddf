"""The bootstrap's records on a real SQLite file: made once, never made again, and an item a
newer stacklet adds to the bootstrap is made on an existing cloud (issue 9, A.6)."""

from __future__ import annotations

from pathlib import Path

import pytest

import stacklet.store.models  # noqa: F401  (every table into Base.metadata)
from stacklet import config
from stacklet.services.identity import IdentityService, passwords
from stacklet.services.identity import bootstrap as bootstrap_mod
from stacklet.store.db import Database
from stacklet.store.models.base import Base


def test_new_items_are_made_once_and_deleted_ones_stay_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "BCRYPT_ROUNDS", 4)
    conf = config.load(tmp_path)
    conf.set("DEFAULT", "bind_port", 19990)
    db = Database(conf.database_url)
    Base.metadata.create_all(db.engine)
    identity = IdentityService(db, conf)
    try:
        identity.bootstrap("a", "d")
        monkeypatch.setattr(bootstrap_mod, "ROLES", (*bootstrap_mod.ROLES, "newer"))
        identity.bootstrap("a", "d")
        newer = identity.roles.find("newer")
        assert newer is not None  # added by a newer bootstrap: made on the existing cloud
        identity.roles.delete(newer["id"])
        identity.bootstrap("a", "d")
        assert identity.roles.find("newer") is None  # deleted by the operator: stays deleted

        # the catalog follows the address unless an endpoint was changed through the API
        endpoints = identity.catalog.list_endpoints()
        moved = next(e for e in endpoints if e["url"].endswith("/networking"))
        identity.catalog.update_endpoint(moved["id"], {"url": "http://elsewhere/net"})
        conf.set("DEFAULT", "bind_port", 19991)
        identity.bootstrap("a", "d")
        urls = {e["id"]: e["url"] for e in identity.catalog.list_endpoints()}
        assert urls.pop(moved["id"]) == "http://elsewhere/net"
        assert all(url.startswith("http://127.0.0.1:19991/") for url in urls.values())
    finally:
        db.dispose()
