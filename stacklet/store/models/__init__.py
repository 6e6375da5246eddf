"""Every table module, imported so that Base.metadata is complete."""
from stacklet.store.models import (
    agents,  # noqa: F401
    bus,  # noqa: F401
    compute,  # noqa: F401
    consoles,  # noqa: F401
    identity,  # noqa: F401
    image,  # noqa: F401
    l3,  # noqa: F401
    network,  # noqa: F401
    rbac,  # noqa: F401
    security_groups,  # noqa: F401
    servers,  # noqa: F401
    subnetpools,  # noqa: F401
)
