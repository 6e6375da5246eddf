"""Password and secret hashes (bcrypt): made and checked here, for users, application
credentials and bootstrap alike."""

from __future__ import annotations

import bcrypt

BCRYPT_ROUNDS = 12
# bcrypt reads at most 72 bytes of a password (and bcrypt >= 5 refuses longer input).
BCRYPT_MAX_BYTES = 72


def _password_bytes(password: str) -> bytes:
    return password.encode()[:BCRYPT_MAX_BYTES]


def hash_password(password: str) -> str:
    return bcrypt.hashpw(_password_bytes(password), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


# Compared against when the user has no password, so that a miss costs as long as a hit.
_DUMMY_HASH = "$2b$12$CFWazfSkZKhDy7nZrNkOV.ujowN8K3onxd4BehjjpoKzWYz1Sbc7a"


def verify_password(password: str, hashed: str | None) -> bool:
    if not hashed:
        bcrypt.checkpw(b"x", _DUMMY_HASH.encode())
        return False
    return bcrypt.checkpw(_password_bytes(password), hashed.encode())
