"""The session's RabbitMQ broker, for the tests of the RabbitMQ transport (stacklet/bus/rabbit.py).

``STACKLET_TEST_RABBIT_URL`` names a broker someone else runs (``rabbit://user:pass@host:port/``);
without it the first test that asks starts one of its own from Debian's rabbitmq-server
(stacklet/harness/rabbitserver.py: data, logs, Mnesia and Erlang cookie in a temp dir, free
ports, its own epmd, stopped by PID at the end). A broker the session must start but cannot is a
failure, never a skip. Tests that restart the broker start one of their own (``new_broker``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacklet.harness import rabbitserver

URL_ENV = "STACKLET_TEST_RABBIT_URL"


def new_broker(host: str = "127.0.0.1") -> rabbitserver.RabbitServer:
    """A started broker of the test's own (close() it); fails the test loudly when it
    cannot start."""
    lacking = rabbitserver.missing()
    if lacking:
        pytest.fail("RabbitMQ tests need " + ", ".join(lacking) +
                    " (scripts/install.sh test installs it)", pytrace=False)
    broker = rabbitserver.RabbitServer(Path(tempfile.mkdtemp(prefix="stacklet-rabbit-")), host)
    try:
        broker.start()
    except BaseException:
        broker.close()
        shutil.rmtree(broker.root, ignore_errors=True)
        raise
    return broker


def drop_broker(broker: rabbitserver.RabbitServer) -> None:
    broker.close()
    if not os.environ.get("STACKLET_TEST_KEEP"):
        shutil.rmtree(broker.root, ignore_errors=True)


@pytest.fixture(scope="session")
def rabbit_url() -> Iterator[str]:
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return
    broker = new_broker()
    try:
        yield broker.url
    finally:
        drop_broker(broker)
