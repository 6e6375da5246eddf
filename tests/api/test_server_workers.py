"""``stacklet server --workers N``: several processes need the RabbitMQ bus (the agents' long
poll and requests live in one process's memory otherwise); the multi-process behaviour itself
is tested end to end in tests/e2e/test_multinode_rabbit.py."""

from __future__ import annotations


def test_workers_without_transport_url_are_refused(tmp_path, stacklet_tools):
    data_dir = tmp_path / "data"
    stacklet_tools.write_config(data_dir, stacklet_tools.free_port())
    result = stacklet_tools.run("server", "--workers", "2", data_dir=data_dir, check=False,
                                timeout=60)
    assert result.returncode == 2, result
    assert "--workers N>1 needs [DEFAULT] transport_url" in result.stderr
    assert not (data_dir / "run" / "agent.sock").exists()
