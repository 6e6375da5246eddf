"""Configuration: defaults, INI overrides, errors, and the generated sample and documentation."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from stacklet import config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / config.CONFIG_FILE_NAME).write_text(text)
    return tmp_path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    conf = config.load(tmp_path)
    assert conf.data_dir == tmp_path.resolve()
    for option in config.OPTIONS:
        assert conf.values[(option.section, option.name)] == option.default
    assert conf.DEFAULT.bind_port == 9600
    assert conf.public_url == "http://127.0.0.1:9600"
    assert conf.database_url == f"sqlite:///{tmp_path.resolve()}/stacklet.db"
    assert conf.config_file == tmp_path.resolve() / "stacklet.conf"
    assert conf.host  # the machine's host name when not configured


def test_ini_overrides_are_parsed_with_their_types(tmp_path: Path) -> None:
    conf = config.load(write(tmp_path, """
[DEFAULT]
bind_port = 19999
bind_host = 0.0.0.0
allow_overlapping_ips = no
default_availability_zones = az1, az2

[database]
connection = postgresql+psycopg://stacklet:secret@db/stacklet
max_retries = 3

[ml2]
tenant_network_types = vlan,vxlan

[agent]
l2_population = off
"""))
    assert conf.DEFAULT.bind_port == 19999
    assert conf.DEFAULT.allow_overlapping_ips is False
    assert conf.DEFAULT.default_availability_zones == ["az1", "az2"]
    assert conf.database.max_retries == 3
    assert conf.database_url == "postgresql+psycopg://stacklet:secret@db/stacklet"
    assert conf.ml2.tenant_network_types == ["vlan", "vxlan"]
    assert conf.agent.l2_population is False
    # a wildcard bind address is still reachable locally
    assert conf.public_url == "http://127.0.0.1:19999"


def test_public_host_wins_over_bind_host(tmp_path: Path) -> None:
    conf = config.load(write(tmp_path,
                             "[DEFAULT]\nbind_port = 1234\npublic_host = cloud.example\n"))
    assert conf.public_url == "http://cloud.example:1234"


def test_unknown_option_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"unknown option \[ml2\] no_such_option"):
        config.load(write(tmp_path, "[ml2]\nno_such_option = 1\n"))


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="unknown option"):
        config.load(write(tmp_path, "[nonsense]\nbind_port = 1\n"))


@pytest.mark.parametrize("text", ["[DEFAULT]\nbind_port = eighty\n",
                                  "[agent]\nl2_population = maybe\n"])
def test_badly_typed_value_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(config.ConfigError):
        config.load(write(tmp_path, text))


def test_unknown_attribute_raises(tmp_path: Path) -> None:
    conf = config.load(tmp_path)
    with pytest.raises(AttributeError):
        conf.DEFAULT.no_such_option  # noqa: B018
    with pytest.raises(KeyError):
        conf.set("DEFAULT", "no_such_option", 1)


def test_sample_lists_every_option_and_loads_back(tmp_path: Path) -> None:
    sample = config.sample()
    for option in config.OPTIONS:
        assert f"#{option.name} = {option.render_default()}" in sample
        assert f"[{option.section}]" in sample
    # uncommenting every line yields a valid file equal to the defaults
    uncommented = "\n".join(
        line[1:] if line.startswith("#") and "=" in line and not line.startswith("# ") else line
        for line in sample.splitlines())
    configparser.ConfigParser(interpolation=None).read_string(uncommented)
    conf = config.load(write(tmp_path, uncommented))
    for option in config.OPTIONS:
        value = conf.values[(option.section, option.name)]
        if option.default is None:
            assert value in (None, "")
        else:
            assert value == option.default


def test_cli_prints_the_sample() -> None:
    out = subprocess.run([sys.executable, "-m", "stacklet.cli", "config", "sample"],
                         capture_output=True, text=True, check=True).stdout
    assert out == config.sample()


def test_configuration_doc_lists_every_option() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for option in config.OPTIONS:
        assert f"## [{option.section}]" in doc
        assert f"| `{option.name}` |" in doc, f"[{option.section}] {option.name} undocumented"
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-config-doc"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_first_up_makes_the_node_a_compute_node_with_the_netns_driver(tmp_path) -> None:
    from stacklet import bootstrap

    conf = config.load(tmp_path)
    assert conf.compute.enabled is False          # the option's default: agents run no compute
    assert bootstrap.ensure_config_file(conf)
    written = config.load(tmp_path)
    assert written.compute.enabled is True and written.compute.driver == "netns"
