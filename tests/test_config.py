from __future__ import annotations

import pytest

from meshrpc.config import VARIABLES, load_settings
from meshrpc.errors import ConfigError


def test_defaults_apply_without_environment() -> None:
    settings = load_settings(environ={})
    assert settings.timeout == 10.0
    assert settings.interfaces == ("all",)
    assert settings.balance == "least-pending"


def test_environment_beats_defaults_and_arguments_beat_environment() -> None:
    env = {"MESHRPC_TIMEOUT": "2.5", "MESHRPC_NAMESPACE": "env-ns"}
    assert load_settings(environ=env).timeout == 2.5
    settings = load_settings({"timeout": 1, "namespace": "arg-ns"}, environ=env)
    assert settings.timeout == 1.0
    assert settings.namespace == "arg-ns"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MESHRPC_TIMEOUT", "soon"),
        ("MESHRPC_TIMEOUT", "-1"),
        ("MESHRPC_TIMEOUT", "nan"),
        ("MESHRPC_INTERFACES", "eth0"),
        ("MESHRPC_INTERFACES", "300.1.1.1"),
        ("MESHRPC_PORT", "70000"),
        ("MESHRPC_BALANCE", "fastest"),
        ("MESHRPC_MAX_CONCURRENCY", "0"),
        ("MESHRPC_SEND_TRACEBACKS", "maybe"),
        ("MESHRPC_DISCOVERY", "carrier-pigeon"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(environ={variable: value})


def test_invalid_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="timeout"):
        load_settings({"timeout": 0}, environ={})
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({"colour": "blue"}, environ={})
    with pytest.raises(ConfigError, match="interfaces"):
        load_settings({"interfaces": ["lo"]}, environ={})


def test_interfaces_accept_lists_of_addresses() -> None:
    settings = load_settings({"interfaces": ["127.0.0.1", "10.0.0.1"]}, environ={})
    assert settings.interfaces == ("127.0.0.1", "10.0.0.1")


def test_every_variable_is_documented_and_prefixed() -> None:
    for var in VARIABLES:
        assert var.env.startswith("MESHRPC_")
        assert var.help


def test_readme_table_lists_every_variable() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for var in VARIABLES:
        assert f"| `{var.env}` |" in readme, f"{var.env} missing from the README table"
