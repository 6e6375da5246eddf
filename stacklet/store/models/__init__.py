"""Every table module, imported so that Base.metadata is complete."""
from stacklet.store.models import network  # noqa: F401
from stacklet.store.models import identity  # noqa: F401
