from __future__ import annotations

from pathlib import Path

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


def test_port_accepts_a_number_a_range_or_zero() -> None:
    assert load_settings(environ={"MESHRPC_PORT": "7000"}).port == (7000, 7000)
    assert load_settings(environ={"MESHRPC_PORT": "7000-7010"}).port == (7000, 7010)
    assert load_settings(environ={}).port == (0, 0)
    assert load_settings({"port": (7100, 7105)}, environ={}).port == (7100, 7105)
    for bad in ("7010-7000", "0-5", "70000", "x"):
        with pytest.raises(ConfigError, match="MESHRPC_PORT"):
            load_settings(environ={"MESHRPC_PORT": bad})


def test_discovery_backends_and_peers() -> None:
    assert load_settings(environ={"MESHRPC_DISCOVERY": "static"}).discovery == "static"
    url = "redis://10.0.0.9:6379/2"
    assert load_settings(environ={"MESHRPC_DISCOVERY": url}).discovery == url
    with pytest.raises(ConfigError, match="MESHRPC_DISCOVERY"):
        load_settings(environ={"MESHRPC_DISCOVERY": "consul"})
    peers = load_settings(environ={"MESHRPC_PEERS": "tcp://10.0.0.5:7000, tcp://svc-a:7001"})
    assert peers.peers == ("tcp://10.0.0.5:7000", "tcp://svc-a:7001")
    for bad in ("10.0.0.5:7000", "tcp://10.0.0.5", "tcp://a b:1", "tcp://h:99999"):
        with pytest.raises(ConfigError, match="MESHRPC_PEERS"):
            load_settings(environ={"MESHRPC_PEERS": bad})


def test_peers_from_a_file(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.write_text("# the seeds\ntcp://10.0.0.5:7000\n\ntcp://10.0.0.6:7000  # second\n")
    settings = load_settings(environ={"MESHRPC_PEERS": f"@{seeds}"})
    assert settings.peers == ("tcp://10.0.0.5:7000", "tcp://10.0.0.6:7000")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(environ={"MESHRPC_PEERS": f"@{tmp_path / 'missing'}"})


def test_advertise_host_must_be_reachable() -> None:
    env = {"MESHRPC_ADVERTISE_HOST": "203.0.113.7"}
    assert load_settings(environ=env).advertise_host == "203.0.113.7"
    for bad in ("0.0.0.0", "example", "1.2.3"):
        with pytest.raises(ConfigError, match="MESHRPC_ADVERTISE_HOST"):
            load_settings(environ={"MESHRPC_ADVERTISE_HOST": bad})
