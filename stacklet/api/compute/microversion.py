"""Compute API microversions: which one a request asks for, and which ones are served.

A client names the version in ``OpenStack-API-Version: compute 2.55`` (any number of
comma-separated ``<service> <version>`` entries, possibly in several headers) or in the legacy
``X-OpenStack-Nova-API-Version: 2.55``; the new header wins when it names compute. No header
means 2.1, ``latest`` means ``MAX``. A malformed version is 400, one outside [MIN, MAX] is 406,
as Nova answers (``nova/api/openstack/wsgi.py``, ``api_version_request.py``).

``MAX`` is the highest version every response this API serves honours up to; see
docs/architecture.md ("Compute API") for why it is what it is and what raising it requires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stacklet import errors

HEADER = "OpenStack-API-Version"
LEGACY_HEADER = "X-OpenStack-Nova-API-Version"
SERVICE = "compute"
_FORMAT = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _FORMAT.match(text)
        if not match:
            raise errors.BadRequest(f"API Version String {text} is of invalid format. Must be "
                                    f"of format MajorNum.MinorNum.")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def at_least(self, text: str) -> bool:
        return self >= Version.parse(text)


MIN = Version(2, 1)
MAX = Version(2, 61)
DEFAULT = MIN


def requested(headers) -> str | None:
    """The version string the headers ask compute for, or None (``headers`` is a Starlette
    ``Headers`` or anything with ``getlist``)."""
    for value in headers.getlist(HEADER):
        for entry in value.split(","):
            service, _, version = entry.strip().partition(" ")
            if service.lower() == SERVICE and version.strip():
                return version.strip()
    legacy = headers.getlist(LEGACY_HEADER)
    if legacy:
        return legacy[-1].strip()
    return None


def negotiate(headers) -> Version:
    """The version a request is served at; raises BadRequest (malformed) or NotAcceptable."""
    text = requested(headers)
    if text is None:
        return DEFAULT
    if text.lower() == "latest":
        return MAX
    version = Version.parse(text)
    if not MIN <= version <= MAX:
        raise errors.NotAcceptable(req_ver=str(version), min_ver=str(MIN), max_ver=str(MAX))
    return version


def response_headers(version: Version) -> list[tuple[str, str]]:
    """What every versioned response (errors included) carries, as Nova sends it."""
    return [(HEADER, f"{SERVICE} {version}"), (LEGACY_HEADER, str(version)),
            ("Vary", HEADER), ("Vary", LEGACY_HEADER)]
