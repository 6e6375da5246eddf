"""OpenStack's default flavors, made on the first ``stacklet up`` that knows them.

m1.tiny ... m1.xlarge with ids 1-5, as Nova's old built-in defaults and DevStack make them.
Like the identity bootstrap, each flavor is recorded (``identity_bootstrap``, item
``flavor:<id>``) in the transaction that makes it and never made again: a flavor an admin
deleted or replaced stays so across restarts. A flavor whose id or name is taken already is
recorded without being made.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from stacklet.store.db import Database
from stacklet.store.models.compute import Flavor
from stacklet.store.models.identity import BootstrapRecord

# (flavorid, name, RAM MB, root disk GB, VCPUs)
DEFAULT_FLAVORS = (
    ("1", "m1.tiny", 512, 1, 1),
    ("2", "m1.small", 2048, 20, 1),
    ("3", "m1.medium", 4096, 40, 2),
    ("4", "m1.large", 8192, 80, 4),
    ("5", "m1.xlarge", 16384, 160, 8),
)


def bootstrap(db: Database) -> None:
    def txn(session: Session) -> None:
        for flavorid, name, ram, disk, vcpus in DEFAULT_FLAVORS:
            item = f"flavor:{flavorid}"
            if session.get(BootstrapRecord, item) is not None:
                continue
            session.add(BootstrapRecord(item=item, value=name))
            taken = session.scalar(select(Flavor.id).where(
                or_(Flavor.flavorid == flavorid, Flavor.name == name)))
            if taken is None:
                session.add(Flavor(flavorid=flavorid, name=name, memory_mb=ram, root_gb=disk,
                                   vcpus=vcpus))
        session.flush()
    db.retrying(txn)
