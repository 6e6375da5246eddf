"""The metadata proxy's signature and shared secret: Neutron's HMAC, one secret per data dir."""

from __future__ import annotations

import hashlib
import hmac
import threading

import pytest

from stacklet import config
from stacklet.metadata import signing


def test_signature_is_neutrons_hmac_sha256_hex() -> None:
    expected = hmac.new(b"s3cret", b"0f1e2d3c-instance", hashlib.sha256).hexdigest()
    assert signing.sign("s3cret", "0f1e2d3c-instance") == expected


def test_verify_accepts_only_the_signature_of_that_id_with_that_secret() -> None:
    good = signing.sign("s3cret", "a")
    assert signing.verify("s3cret", "a", good)
    assert not signing.verify("s3cret", "b", good)          # another instance
    assert not signing.verify("other", "a", good)           # another secret
    assert not signing.verify("s3cret", "a", good.upper())  # not the hex Neutron sends
    assert not signing.verify("s3cret", "a", "")
    assert not signing.verify("s3cret", "a", None)


def test_configured_secret_wins(tmp_path) -> None:
    conf = config.load(tmp_path)
    conf.set("metadata", "metadata_proxy_shared_secret", "from-config")
    assert signing.shared_secret(conf) == "from-config"
    assert not (tmp_path / signing.SECRET_FILE).exists()


def test_secret_is_generated_once_private_and_kept(tmp_path) -> None:
    conf = config.load(tmp_path)
    first = signing.shared_secret(conf)
    path = tmp_path / signing.SECRET_FILE
    assert len(first) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert signing.shared_secret(config.load(tmp_path)) == first
    assert signing.shared_secret(config.load(tmp_path / "other")) != first


def test_concurrent_first_use_agrees_on_one_secret(tmp_path) -> None:
    conf = config.load(tmp_path)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(signing.shared_secret(conf)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [signing.SECRET_FILE]


def test_empty_secret_file_is_an_error_not_an_empty_key(tmp_path) -> None:
    (tmp_path / signing.SECRET_FILE).write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        signing.shared_secret(config.load(tmp_path))
