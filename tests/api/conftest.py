"""Fixtures shared by the API test modules (a module may define its own of the same name)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dashboard_ui import artifacts, browser, dash  # noqa: F401  (the dashboard's browser)
from netutil import Api, admin_api, project_api


@pytest.fixture(scope="module")
def admin(cloud) -> Iterator[Api]:
    """The cloud admin; what the module created as admin is removed after it."""
    api = admin_api(cloud)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def user(cloud) -> Iterator[Api]:
    """A member of a project of its own, so that lists change only through this module."""
    yield from project_api(cloud)
