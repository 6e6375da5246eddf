"""First-start work for ``stacklet up``: data directory, config file, passwords, client files.

Everything here is idempotent: files that exist are kept (passwords are generated once and never
replaced), so ``up`` can run any number of times.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from stacklet.config import Config

PASSWORDS_FILE = "passwords.json"
CLOUDS_FILE = "clouds.yaml"
OPENRC_FILE = "openrc"

ADMIN_USER = ADMIN_PROJECT = "admin"
DEMO_USER = DEMO_PROJECT = "demo"
DOMAIN = "Default"

INITIAL_CONFIG = """\
# stacklet configuration. This file lists only what differs from the defaults;
# `stacklet config sample` prints every option with its default and help
# (also in docs/configuration.md of the source tree).

[DEFAULT]
bind_host = {bind_host}
bind_port = {bind_port}

# This node runs instances too (the netns driver: a namespace per instance), as a
# DevStack all-in-one runs nova-compute.
[compute]
enabled = true
driver = netns
"""


@dataclass(frozen=True)
class Passwords:
    admin: str
    demo: str


def ensure_dirs(data_dir: Path) -> None:
    """Create the data directory (0700) and its log/ and run/ subdirectories."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    for sub in ("log", "run"):
        (data_dir / sub).mkdir(mode=0o700, exist_ok=True)


def ensure_config_file(conf: Config) -> bool:
    """Write a short stacklet.conf when there is none. True when it was written."""
    path = conf.config_file
    if path.exists():
        return False
    _write_private(path, INITIAL_CONFIG.format(bind_host=conf.DEFAULT.bind_host,
                                               bind_port=conf.DEFAULT.bind_port))
    return True


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def new_password() -> str:
    return secrets.token_urlsafe(18)


def ensure_passwords(data_dir: Path) -> Passwords:
    """The admin and demo passwords, generated on first start and stored in the data dir."""
    path = data_dir / PASSWORDS_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        return Passwords(admin=stored["admin"], demo=stored["demo"])
    passwords = Passwords(admin=new_password(), demo=new_password())
    _write_private(path, json.dumps({"admin": passwords.admin, "demo": passwords.demo},
                                    indent=2) + "\n")
    return passwords


def auth_url(conf: Config) -> str:
    return f"{conf.public_url}/identity/v3"


def _cloud_entry(conf: Config, user: str, project: str, password: str) -> dict:
    return {
        "auth": {
            "auth_url": auth_url(conf),
            "username": user,
            "password": password,
            "project_name": project,
            "user_domain_name": DOMAIN,
            "project_domain_name": DOMAIN,
        },
        "region_name": conf.DEFAULT.region_name,
        "interface": "public",
        "identity_api_version": 3,
    }


def clouds_yaml(conf: Config, passwords: Passwords) -> str:
    clouds = {"clouds": {
        "stacklet": _cloud_entry(conf, DEMO_USER, DEMO_PROJECT, passwords.demo),
        "stacklet-admin": _cloud_entry(conf, ADMIN_USER, ADMIN_PROJECT, passwords.admin),
    }}
    return yaml.safe_dump(clouds, sort_keys=False)


def openrc(conf: Config, passwords: Passwords) -> str:
    variables = {
        "OS_AUTH_TYPE": "password",
        "OS_AUTH_URL": auth_url(conf),
        "OS_IDENTITY_API_VERSION": "3",
        "OS_REGION_NAME": conf.DEFAULT.region_name,
        "OS_INTERFACE": "public",
        "OS_USERNAME": ADMIN_USER,
        "OS_PASSWORD": passwords.admin,
        "OS_PROJECT_NAME": ADMIN_PROJECT,
        "OS_USER_DOMAIN_NAME": DOMAIN,
        "OS_PROJECT_DOMAIN_NAME": DOMAIN,
    }
    lines = ["# stacklet admin credentials: source this file, then run `openstack ...`",
             "unset OS_CLOUD OS_TOKEN OS_PROJECT_ID OS_TENANT_NAME OS_TENANT_ID"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
    return "\n".join(lines) + "\n"


def write_client_files(conf: Config, passwords: Passwords) -> tuple[Path, Path]:
    """(Re)write clouds.yaml and openrc (mode 0600); they follow the configured URL."""
    clouds = conf.data_dir / CLOUDS_FILE
    rc = conf.data_dir / OPENRC_FILE
    _write_private(clouds, clouds_yaml(conf, passwords))
    _write_private(rc, openrc(conf, passwords))
    return clouds, rc


def bootstrap_identity(conf: Config, passwords: Passwords) -> None:
    """Create (or repair) the admin and demo users, projects, roles and the catalog, and
    the default flavors (each made once: never again after an operator deleted it)."""
    from stacklet.services.compute import bootstrap as compute_bootstrap
    from stacklet.services.identity import IdentityService
    from stacklet.store.db import Database

    db = Database(conf.database_url, max_retries=conf.database.max_retries)
    try:
        IdentityService(db, conf).bootstrap(passwords.admin, passwords.demo)
        compute_bootstrap.bootstrap(db)
    finally:
        db.dispose()
