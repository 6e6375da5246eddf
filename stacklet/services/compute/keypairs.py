"""Key pairs: per user, imported or generated (Nova's os-keypairs and ``nova/crypto.py``).

- An ``ssh`` public key must load as OpenSSH's format (``ssh-rsa``, ``ssh-ed25519``,
  ``ecdsa-sha2-nistp*``, ...); its fingerprint is the MD5 of the key blob, colon-separated,
  as Nova (and ``ssh-keygen -E md5``) compute it.
- An ``x509`` public key is a PEM certificate; its fingerprint is the certificate's SHA-1.
- Generating (before microversion 2.92) makes a 2048-bit RSA key ("ssh-rsa ... Generated-by-
  Nova", private key in traditional PEM) or, for x509, a self-signed certificate for
  ``CN=<user_id>`` with the private key as a base64 PKCS#12 bundle, as Nova's
  ``generate_winrm_x509_cert``. The private key is returned once and never stored.
- ``key_pairs`` (``[quota]``, per user) bounds how many a user holds: over it is 403
  "Quota exceeded, too many key pairs.".
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.services.compute import policy
from stacklet.services.compute import validation as v
from stacklet.services.compute.quotas import ComputeQuotaService
from stacklet.store.db import Database
from stacklet.store.models.compute import KeyPair

SSH, X509 = "ssh", "x509"
_NAME = re.compile(r"^[_\- a-zA-Z0-9]+$")
_NAME_V292 = re.compile(r"^[_\-@. a-zA-Z0-9]+$")


def ssh_fingerprint(public_key: str) -> str:
    try:
        serialization.load_ssh_public_key(public_key.encode("utf-8"))
        blob = base64.b64decode(public_key.split(" ")[1])
    except Exception:  # noqa: BLE001  (whatever fails to parse is refused alike, as Nova)
        raise errors.InvalidKeypair(reason="failed to generate fingerprint") from None
    return _colons(hashlib.md5(blob, usedforsecurity=False).hexdigest())


def x509_fingerprint(pem: str) -> str:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise errors.InvalidKeypair(reason=f"failed to generate X509 fingerprint. Error "
                                           f"message: {exc}") from None
    return _colons(cert.fingerprint(hashes.SHA1()).hex())


def _colons(hexdigest: str) -> str:
    return ":".join(a + b for a, b in zip(hexdigest[::2], hexdigest[1::2], strict=True))


def generate_ssh() -> tuple[str, str, str]:
    """(private key, public key, fingerprint) of a new 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    public = f"{public} Generated-by-Nova"
    return private, public, ssh_fingerprint(public)


def generate_x509(user_id: str) -> tuple[str, str, str]:
    """(base64 PKCS#12 private key, PEM certificate, fingerprint) for WinRM, as Nova makes
    them: CN=<user_id>, 10 years, client authentication with the UPN <user_id>@localhost."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user_id)])
    now = datetime.datetime.now(datetime.UTC)
    upn = x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"),
                         _der_utf8(f"{user_id}@localhost"))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([upn]), critical=False)
            .sign(key, hashes.SHA256()))
    certificate = cert.public_bytes(serialization.Encoding.PEM).decode()
    bundle = pkcs12.serialize_key_and_certificates(None, key, cert, None,
                                                   serialization.NoEncryption())
    return base64.b64encode(bundle).decode("ascii"), certificate, x509_fingerprint(certificate)


def _der_utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return bytes([0x0C, len(raw)]) + raw


@dataclass(frozen=True)
class CreateOptions:
    """What the request's microversion allows in POST /os-keypairs."""
    with_type: bool         # 2.2
    with_user: bool         # 2.10
    generate: bool          # before 2.92
    name_v292: bool         # 2.92's name characters


def _nova_time(stamp: str | None) -> str | None:
    """Nova's timestamps in key pairs: ``2014-05-07T12:06:13.000000`` (no zone)."""
    return stamp.replace("Z", ".000000") if stamp else stamp


def _record(row: KeyPair) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "user_id": row.user_id,
            "fingerprint": row.fingerprint, "public_key": row.public_key, "type": row.type,
            "created_at": _nova_time(row.created_at),
            "updated_at": _nova_time(row.updated_at), "deleted": False,
            "deleted_at": None}


class KeypairService:
    def __init__(self, db: Database, conf: Config, quotas: ComputeQuotaService) -> None:
        self.db = db
        self.conf = conf
        self.quotas = quotas

    def _limit(self, session: Session, ctx: RequestContext) -> int:
        """The key pair limit of the caller's project (key pairs count per user)."""
        return self.quotas.limits(session, ctx.project_id or "")["key_pairs"]

    def create(self, ctx: RequestContext, body: Any, opts: CreateOptions) -> dict[str, Any]:
        allowed = {"name", "public_key"} | ({"type"} if opts.with_type else set()) \
            | ({"user_id"} if opts.with_user else set())
        required = ("name",) if opts.generate else ("name", "public_key")
        spec = v.member(body, "keypair", allowed, required)
        name = v.name("name", spec["name"])
        if not (_NAME_V292 if opts.name_v292 else _NAME).match(name):
            raise v.invalid("name", name, f"{name!r} does not match "
                                          f"'{(_NAME_V292 if opts.name_v292 else _NAME).pattern}'")
        key_type = spec.get("type", SSH)
        if key_type not in (SSH, X509):
            raise v.invalid("type", key_type, f"{key_type!r} is not one of ['ssh', 'x509']")
        user_id = spec.get("user_id") or ctx.user_id or ""
        if not isinstance(user_id, str):
            raise v.invalid("user_id", user_id, f"{user_id!r} is not of type 'string'")
        policy.admin_or_owner(ctx, "os-keypairs:create", user_id)
        private_key = None
        if "public_key" in spec:
            public_key = spec["public_key"]
            if not isinstance(public_key, str):
                raise v.invalid("public_key", public_key,
                                f"{public_key!r} is not of type 'string'")
            fingerprint = (ssh_fingerprint(public_key) if key_type == SSH
                           else x509_fingerprint(public_key))
        else:
            private_key, public_key, fingerprint = (
                generate_ssh() if key_type == SSH else generate_x509(user_id))

        def write(session: Session) -> dict[str, Any]:
            limit = self._limit(session, ctx)
            if 0 <= limit <= self.count(session, user_id):
                raise errors.KeypairLimitExceeded()
            if session.scalar(select(KeyPair.id).where(KeyPair.user_id == user_id,
                                                       KeyPair.name == name)):
                raise errors.KeyPairExists(key_name=name)
            row = KeyPair(user_id=user_id, name=name, fingerprint=fingerprint,
                          public_key=public_key, type=key_type)
            session.add(row)
            session.flush()
            return _record(row)
        record = self.db.retrying(write)
        if private_key is not None:
            record["private_key"] = private_key
        return record

    def _user(self, ctx: RequestContext, user_id: str | None, rule: str) -> str:
        user = user_id or ctx.user_id or ""
        policy.admin_or_owner(ctx, f"os-keypairs:{rule}", user)
        return user

    def list(self, ctx: RequestContext, user_id: str | None, limit: int | None,
             marker: str | None) -> list[dict[str, Any]]:
        user = self._user(ctx, user_id, "index")
        query = select(KeyPair).where(KeyPair.user_id == user).order_by(KeyPair.name)
        with self.db.read() as session:
            if marker is not None:
                anchor = session.scalar(select(KeyPair.id).where(KeyPair.user_id == user,
                                                                 KeyPair.name == marker))
                if anchor is None:
                    raise errors.BadRequest(f"Marker {marker} could not be found.")
                query = query.where(KeyPair.name > marker)
            if limit is not None:
                query = query.limit(limit)
            return [_record(r) for r in session.scalars(query)]

    def get(self, ctx: RequestContext, name: str, user_id: str | None) -> dict[str, Any]:
        user = self._user(ctx, user_id, "show")
        with self.db.read() as session:
            row = session.scalar(select(KeyPair).where(KeyPair.user_id == user,
                                                       KeyPair.name == name))
            if row is None:
                raise errors.KeypairNotFound(name=name, user_id=user)
            return _record(row)

    def delete(self, ctx: RequestContext, name: str, user_id: str | None) -> None:
        user = self._user(ctx, user_id, "delete")

        def write(session: Session) -> None:
            row = session.scalar(select(KeyPair).where(KeyPair.user_id == user,
                                                       KeyPair.name == name))
            if row is None:
                raise errors.KeypairNotFound(name=name, user_id=user)
            session.delete(row)
        self.db.retrying(write)

    @staticmethod
    def count(session: Session, user_id: str) -> int:
        return session.scalar(select(func.count()).select_from(KeyPair).where(
            KeyPair.user_id == user_id)) or 0
