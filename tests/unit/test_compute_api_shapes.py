"""The Compute API's pure parts: microversion negotiation, views by microversion (including
the versions above today's maximum, which only a raised maximum will reach), key pairs at
2.92, and the default flavors' bootstrap on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.datastructures import Headers

import stacklet.store.models  # noqa: F401  (every table into Base.metadata)
from stacklet import config, errors
from stacklet.api.compute import microversion
from stacklet.api.compute.flavors import basic, full
from stacklet.api.compute.keypairs import INDEX_FIELDS, SHOW_FIELDS, _view
from stacklet.api.compute.microversion import Version
from stacklet.context import RequestContext
from stacklet.services.compute import bootstrap as flavor_bootstrap
from stacklet.services.compute.keypairs import CreateOptions, KeypairService, generate_ssh
from stacklet.services.compute.quotas import ComputeQuotaService, hidden
from stacklet.store.db import Database
from stacklet.store.models.base import Base
from stacklet.store.models.compute import Flavor


def headers(*pairs: tuple[str, str]) -> Headers:
    return Headers(raw=[(k.lower().encode(), v.encode()) for k, v in pairs])


@pytest.mark.parametrize("pairs,expected", [
    ((), "2.1"),
    ((("OpenStack-API-Version", "compute 2.20"),), "2.20"),
    ((("OpenStack-API-Version", "image 2.5"), ("OpenStack-API-Version", "compute 2.3")),
     "2.3"),
    ((("OpenStack-API-Version", "COMPUTE latest"),), str(microversion.MAX)),
    ((("X-OpenStack-Nova-API-Version", "2.11"),), "2.11"),
])
def test_negotiate(pairs, expected) -> None:
    assert str(microversion.negotiate(headers(*pairs))) == expected


def test_negotiate_refuses() -> None:
    with pytest.raises(errors.NotAcceptable):
        microversion.negotiate(headers(("OpenStack-API-Version", "compute 2.0")))
    with pytest.raises(errors.NotAcceptable):
        microversion.negotiate(headers(("X-OpenStack-Nova-API-Version", "9.1")))
    with pytest.raises(errors.BadRequest):
        microversion.negotiate(headers(("OpenStack-API-Version", "compute 2.01")))
    assert Version.parse("2.10") > Version.parse("2.9")


FLAVOR = {"id": 7, "flavorid": "7", "name": "f", "memory_mb": 64, "vcpus": 1, "root_gb": 0,
          "ephemeral_gb": 0, "swap": 0, "rxtx_factor": 1.0, "is_public": True,
          "disabled": False, "description": "d", "extra_specs": {"k": "v"}}
LINKS = [{"rel": "self", "href": "x"}]


@pytest.mark.parametrize("version,present,absent,swap", [
    ("2.1", {"rxtx_factor", "OS-FLV-DISABLED:disabled"}, {"description", "extra_specs"}, ""),
    ("2.55", {"description"}, {"extra_specs"}, ""),
    ("2.61", {"description", "extra_specs"}, set(), ""),
    ("2.75", {"extra_specs"}, set(), 0),
    ("2.102", {"extra_specs"}, {"rxtx_factor", "OS-FLV-DISABLED:disabled"}, 0),
])
def test_flavor_view_by_version(version, present, absent, swap) -> None:
    body = full(FLAVOR, Version.parse(version), LINKS)
    assert present <= set(body) and not absent & set(body)
    assert body["swap"] == swap
    brief = basic(FLAVOR, Version.parse(version), LINKS)
    assert ("description" in brief) == Version.parse(version).at_least("2.55")


def test_keypair_view_and_quota_sets_by_version() -> None:
    record = {name: name for name in SHOW_FIELDS + ("type",)}
    assert set(_view(record, INDEX_FIELDS, Version(2, 1))) == set(INDEX_FIELDS)
    assert set(_view(record, INDEX_FIELDS, Version(2, 2))) == {*INDEX_FIELDS, "type"}
    assert hidden(network=False, personality=False) == set()
    assert "floating_ips" in hidden(network=True, personality=False)
    assert "injected_files" in hidden(network=True, personality=True)


@pytest.fixture
def db(tmp_path: Path):
    conf = config.load(tmp_path)
    database = Database(conf.database_url)
    Base.metadata.create_all(database.engine)
    yield conf, database
    database.dispose()


def test_keypairs_at_2_92_need_a_public_key_and_allow_at_and_dot(db) -> None:
    conf, database = db
    keypairs = KeypairService(database, conf, ComputeQuotaService(database, conf))
    ctx = RequestContext(user_id="u1", project_id="p1", roles=frozenset({"member"}))
    v292 = CreateOptions(with_type=True, with_user=True, generate=False, name_v292=True)
    with pytest.raises(errors.BadRequest, match="'public_key' is a required property"):
        keypairs.create(ctx, {"keypair": {"name": "k"}}, v292)
    public = generate_ssh()[1]
    made = keypairs.create(ctx, {"keypair": {"name": "me@host.x", "public_key": public}},
                           v292)
    assert made["name"] == "me@host.x" and "private_key" not in made
    v291 = CreateOptions(with_type=True, with_user=True, generate=True, name_v292=False)
    with pytest.raises(errors.BadRequest, match="name"):
        keypairs.create(ctx, {"keypair": {"name": "me@host.y", "public_key": public}}, v291)


def test_default_flavors_made_once(db) -> None:
    _, database = db
    with database.write() as session:   # an operator's flavor holding a default's name
        session.add(Flavor(flavorid="x", name="m1.large", memory_mb=1, vcpus=1))
    flavor_bootstrap.bootstrap(database)

    def flavors() -> dict[str, str]:
        with database.read() as session:
            return {f.flavorid: f.name for f in session.scalars(select(Flavor))}

    assert flavors() == {"1": "m1.tiny", "2": "m1.small", "3": "m1.medium", "x": "m1.large",
                         "5": "m1.xlarge"}
    with database.write() as session:
        session.delete(session.scalar(select(Flavor).where(Flavor.flavorid == "1")))
        session.delete(session.scalar(select(Flavor).where(Flavor.flavorid == "x")))
    flavor_bootstrap.bootstrap(database)
    assert flavors() == {"2": "m1.small", "3": "m1.medium", "5": "m1.xlarge"}
