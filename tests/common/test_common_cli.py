"""common.cli: the shared flags, one override syntax, config files and the exit-code wrapper."""
from __future__ import annotations

import pytest

from common import cli
from common.config import apply_overrides
from common.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, ConfigError, SynthfaceError


def _parser():
    p = cli.parser("x.y")
    cli.add_config(p)
    cli.add_override(p)
    cli.add_out(p, help="dir", default="out")
    cli.add_fresh(p)
    cli.add_threads(p)
    cli.add_quiet(p)
    return p


def test_shared_flags_and_one_override_syntax():
    ns = _parser().parse_args(["--override", "a.b=1", "c=[1, 2]", "-o", "d=x", "--fresh", "--threads", "2", "-q"])
    assert ns.override == ["a.b=1", "c=[1, 2]", "d=x"] and ns.fresh and ns.threads == 2 and ns.quiet
    assert ns.out == "out" and ns.config is None
    assert apply_overrides({"a": {"b": 0, "e": 2}}, ns.override) == {"a": {"b": 1, "e": 2}, "c": [1, 2], "d": "x"}
    assert _parser().parse_args([]).override == []


def test_load_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*missing.yaml: file not found"):
        cli.load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        cli.load_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        cli.load_yaml(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert cli.load_yaml(tmp_path / "empty.yaml") == {}


def test_run_exit_codes(capsys):
    assert cli.run(lambda: None) == 0 and cli.run(lambda: 3) == 3

    def bad():
        raise ConfigError("a.b: expected an integer")

    assert cli.run(bad) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == "config error: a.b: expected an integer"

    class Failed(SynthfaceError):
        exit_code = 1

    def failed():
        raise Failed("disk full")

    assert cli.run(failed) == 1 and "error: disk full" in capsys.readouterr().err

    def interrupted():
        raise KeyboardInterrupt

    assert cli.run(interrupted, interrupted="stopped") == EXIT_INTERRUPTED and "stopped" in capsys.readouterr().err

    def other():
        raise ValueError("no")

    with pytest.raises(ValueError):
        cli.run(other)
    assert cli.run(other, also=(ValueError,)) == EXIT_BAD_INPUT
