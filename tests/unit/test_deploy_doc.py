"""docs/deploy-multinode.md: every option in its config files exists (stacklet/config.py), and
the commands it shows are stacklet's."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from stacklet import cli, config

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy-multinode.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_every_option_of_the_config_files_exists():
    known = {(o.section, o.name) for o in config.OPTIONS}
    ini = _blocks("ini")
    assert len(ini) == 3, "controller, network node, compute node"
    for block in ini:
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(block)
        used = [("DEFAULT", k) for k in parser.defaults()]
        used += [(s, k) for s in parser.sections() for k in parser[s]
                 if k not in parser.defaults()]
        assert [u for u in used if u not in known] == []


def test_the_commands_parse():
    parser = cli.build_parser()
    commands = [line.strip() for block in _blocks("sh") for line in block.splitlines()
                if line.strip().startswith("stacklet ")]
    assert len(commands) >= 5
    for command in commands:
        parser.parse_args(command.split()[1:])
