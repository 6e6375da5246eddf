"""linux.write_atomic gives its files the mode (and group) asked for whatever the umask:
`stacklet up` runs the agent under umask 077, and dnsmasq/radvd re-read theirs unprivileged."""

from __future__ import annotations

import grp
import os

import pytest

from stacklet import linux


@pytest.fixture
def umask_077():
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_file_gets_the_mode_asked_for_under_umask_077(tmp_path, umask_077):
    path = tmp_path / "host"
    assert linux.write_atomic(path, "a\n", mode=0o644) is True
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.read_text() == "a\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_an_unreadable_file_with_the_same_content_is_put_right(tmp_path, umask_077):
    gid = grp.getgrnam("nogroup").gr_gid
    path = tmp_path / "host"
    path.write_text("a\n")                       # 0600, as the old code left it
    assert path.stat().st_mode & 0o777 == 0o600
    assert linux.write_atomic(path, "a\n", mode=0o640, gid=gid) is True   # a reload is due
    st = path.stat()
    assert (st.st_mode & 0o777, st.st_gid) == (0o640, gid)
    assert linux.write_atomic(path, "a\n", mode=0o640, gid=gid) is False
    assert linux.write_atomic(path, "b\n", mode=0o640, gid=gid) is True
    st = path.stat()
    assert (st.st_mode & 0o777, st.st_gid, path.read_text()) == (0o640, gid, "b\n")
