from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

MODULES = ["meshrpc", "meshrpc.errors", "meshrpc.sync", "meshrpc.discovery", "meshrpc.transport"]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for item in exported:
        assert getattr(module, item) is not None


def test_public_names_of_the_core_api() -> None:
    import meshrpc

    for name in (
        "Responder",
        "Requester",
        "run",
        "current_call",
        "RemoteError",
        "DeadlineExceeded",
        "NoResponder",
        "PeerLost",
        "Overloaded",
        "ProtocolError",
        "ConfigError",
    ):
        assert name in meshrpc.__all__
    assert issubclass(meshrpc.DeadlineExceeded, TimeoutError)
    for name in ("RemoteError", "DeadlineExceeded", "NoResponder", "PeerLost", "Overloaded"):
        assert issubclass(getattr(meshrpc, name), meshrpc.MeshError)


def test_importing_meshrpc_does_not_import_zmq_or_zeroconf() -> None:
    code = (
        "import sys, meshrpc, meshrpc.sync; print('zmq' in sys.modules, 'zeroconf' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_constructing_components_does_no_io() -> None:
    import meshrpc

    code = (
        "import sys, meshrpc; r = meshrpc.Responder(name='x'); q = meshrpc.Requester(name='y');"
        "print('zmq' in sys.modules, 'zeroconf' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert meshrpc.Responder(name="x").endpoint is None
