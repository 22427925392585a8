"""A private mesh from one secret: CurveZMQ + ZAP, signed advertisements, hidden secrets.

Real zeroconf on 127.0.0.1 and real ZeroMQ on loopback. Outsiders are raw ZeroMQ
sockets (plaintext, a wrong server key, or the right server key with their own client
keys) and forged advertisements published over real mDNS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import zmq
from zmq.utils import z85

from meshrpc import ConfigError, NoResponder, Publisher, Requester, Responder, Subscriber
from meshrpc._protocol import codec
from meshrpc.config import load_settings
from meshrpc.discovery.mdns import MdnsDiscovery
from meshrpc.security import Secret, derive, sign, verify
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

SECRET = "correct horse battery staple 42"
OTHER = "another mesh entirely, 1234567"


def guarded(namespace: str, secret: str | None = SECRET, **kwargs: Any) -> Responder:
    responder = Responder(name="vault", namespace=namespace, secret=secret, **kwargs)
    responder.runs = 0  # type: ignore[attr-defined]

    @responder.on("open")
    async def open_(payload: Any) -> str:
        responder.runs += 1  # type: ignore[attr-defined]
        return "opened"

    return responder


@pytest.fixture
def raw() -> Iterator[list[zmq.Socket[bytes]]]:
    made: list[zmq.Socket[bytes]] = []
    yield made
    for sock in made:
        sock.close(linger=0)


def dealer(made: list[zmq.Socket[bytes]], **curve: bytes) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 1500)
    for name, value in curve.items():
        sock.setsockopt(getattr(zmq, name), value)
    made.append(sock)
    return sock


async def answered(sock: zmq.Socket[bytes], endpoint: str) -> bool:
    """Send one valid request; whether any reply came back within RCVTIMEO."""
    sock.connect(endpoint)
    sock.send(codec.encode_request(1, "open", 5000, None))
    try:
        await anyio.to_thread.run_sync(sock.recv)
    except zmq.Again:
        return False
    return True


def mesh_keys(secret: str) -> tuple[bytes, bytes]:
    keys = derive(Secret(secret))
    secret_z85 = z85.encode(keys.curve_secret)
    return secret_z85, zmq.curve_public(secret_z85)


# -- key derivation and advertisement signatures ------------------------------------


def test_kdf_is_stable_and_separates_meshes() -> None:
    a, b = derive(Secret(SECRET)), derive(Secret(OTHER))
    # Pinned values of the documented KDF: members built from any release must derive
    # the same keys, so a change here breaks every deployed mesh.
    assert a.key_id == "1c4cebf3b3ca"
    assert hashlib.sha256(a.curve_secret).hexdigest()[:16] == "61595098aa92d5d6"
    assert hashlib.sha256(a.ad_key).hexdigest()[:16] == "eea2b69438a3deca"
    assert len(a.curve_secret) == 32
    assert len({a.key_id, b.key_id}) == 2
    assert a.curve_secret != b.curve_secret
    assert a.ad_key != a.curve_secret
    assert SECRET not in repr(a)


def test_secret_is_never_shown() -> None:
    secret = Secret(SECRET)
    assert SECRET not in repr(secret)
    assert SECRET not in str(secret)
    settings = load_settings({"secret": SECRET}, environ={})
    assert SECRET not in repr(settings)
    responder = guarded("ns")
    assert SECRET not in repr(responder)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"MESHRPC_SECRET": "short-secret"})
    assert "short-secret" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings({"secret": "short-secret"}, environ={})
    assert "short-secret" not in str(info.value)


def test_signed_advertisement_verifies_and_any_change_breaks_it() -> None:
    from meshrpc._protocol.advertisement import Advertisement

    keys = derive(Secret(SECRET))
    ad = Advertisement("id1", "vault", "responder", "tcp://127.0.0.1:5000", types=("open",))
    signed = sign(ad, keys)
    assert verify(signed, keys) is None
    again = Advertisement.from_properties(signed.to_properties())
    assert verify(again, keys) is None
    assert SECRET not in str(signed.to_properties())
    for change in (
        {"endpoint": "tcp://127.0.0.1:6666"},
        {"types": ("open", "extra")},
        {"name": "vault2"},
        {"issued": signed.issued + 1},
        {"idempotent": ("open",)},
    ):
        assert verify(dataclasses.replace(signed, **change), keys) == "bad mac", change
    assert verify(ad, keys) == "not signed"
    assert verify(signed, derive(Secret(OTHER))) == "signed for another mesh"
    future = sign(ad, keys, now=time.time() + 3600)
    assert verify(future, keys) == "timestamp in the future"


# -- members talk, outsiders are refused --------------------------------------------


async def test_members_with_the_secret_call_each_other(namespace: str) -> None:
    vault = guarded(namespace)
    async with vault, Requester(name="member", namespace=namespace, secret=SECRET) as client:
        assert await client.send("open", timeout=10) == "opened"
        assert vault.runs == 1  # type: ignore[attr-defined]
        ad = client.responders()[0]
        assert ad.mac
        assert SECRET not in str(ad.to_properties())


async def test_pubsub_is_covered_by_the_secret(namespace: str) -> None:
    got: list[Any] = []
    sub = Subscriber(name="listener", namespace=namespace, secret=SECRET)
    outsider = Subscriber(name="outsider", namespace=namespace)
    outsider_got: list[Any] = []
    sub.on("alarm", got.append)
    outsider.on("alarm", outsider_got.append)
    async with (
        Publisher(name="siren", namespace=namespace, secret=SECRET) as pub,
        sub,
        outsider,
    ):
        await sub.wait_for_publishers(1, timeout=10)
        await pub.publish("alarm", "fire")
        await eventually(lambda: got == ["fire"])
        with pytest.raises(NoResponder):
            await outsider.wait_for_publishers(1, timeout=0.5)
    assert outsider_got == []


async def test_requesters_without_or_with_another_secret_see_no_responder(
    namespace: str,
) -> None:
    vault = guarded(namespace)
    async with (
        vault,
        Requester(name="plain", namespace=namespace) as plain,
        Requester(name="wrong", namespace=namespace, secret=OTHER) as wrong,
        Requester(name="member", namespace=namespace, secret=SECRET) as member,
    ):
        await member.wait_for_responders("open", timeout=10)
        with pytest.raises(NoResponder):
            await plain.send("open", timeout=0.5)
        with pytest.raises(NoResponder):
            await wrong.send("open", timeout=0.5)
        assert wrong.statistics()["foreign_ads"] >= 1
    assert vault.runs == 0  # type: ignore[attr-defined]


async def test_outsiders_are_refused_at_the_handshake(
    namespace: str, raw: list[zmq.Socket[bytes]]
) -> None:
    from meshrpc.transport.zmq import _ZAP

    vault = guarded(namespace)
    member_secret, mesh_public = mesh_keys(SECRET)
    _, other_public = mesh_keys(OTHER)
    own_public, own_secret = zmq.curve_keypair()
    async with vault:
        endpoint = vault.endpoint
        assert endpoint is not None
        refused_before = sum(_ZAP.refused.values())
        # S1: plaintext.
        assert not await answered(dealer(raw), endpoint)
        # S2: wrong server key (another mesh's members).
        assert not await answered(
            dealer(
                raw,
                CURVE_SERVERKEY=other_public,
                CURVE_PUBLICKEY=own_public,
                CURVE_SECRETKEY=own_secret,
            ),
            endpoint,
        )
        # S2: the right server key, but its own client keys: ZAP says no.
        assert not await answered(
            dealer(
                raw,
                CURVE_SERVERKEY=mesh_public,
                CURVE_PUBLICKEY=own_public,
                CURVE_SECRETKEY=own_secret,
            ),
            endpoint,
        )
        assert sum(_ZAP.refused.values()) > refused_before
        assert vault.runs == 0  # type: ignore[attr-defined]
        # The real thing gets in.
        assert await answered(
            dealer(
                raw,
                CURVE_SERVERKEY=mesh_public,
                CURVE_PUBLICKEY=mesh_public,
                CURVE_SECRETKEY=member_secret,
            ),
            endpoint,
        )
        assert vault.runs == 1  # type: ignore[attr-defined]


async def test_forged_advertisements_are_ignored_and_counted(namespace: str) -> None:
    vault = guarded(namespace)
    forger = MdnsDiscovery(interfaces=["127.0.0.1"])
    await forger.start()
    try:
        async with vault, Requester(name="member", namespace=namespace, secret=SECRET) as client:
            await client.wait_for_responders("open", timeout=10)
            real = client.responders()[0]
            # A copy of the real record that points elsewhere (keeps the old MAC) and
            # an unsigned one: neither may be used.
            tampered = dataclasses.replace(
                real, instance_id="forged1", endpoint="tcp://127.0.0.1:9"
            )
            unsigned = dataclasses.replace(
                real, instance_id="forged2", endpoint="tcp://127.0.0.1:9", mac="", key_id=""
            )
            await forger.register(tampered)
            await forger.register(unsigned)
            await eventually(lambda: client.statistics()["forged_ads"] >= 2, timeout=10)
            assert [ad.instance_id for ad in client.responders()] == [real.instance_id]
            for _ in range(10):
                assert await client.send("open", timeout=5) == "opened"
    finally:
        await forger.aclose()


# -- what an attacker without the secret can still throw at a component -----------


def closed_by_peer(s: socket.socket) -> bool:
    """Read (the server's ZMTP greeting) until the server closes; False on timeout."""
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_idle_connections_are_closed_after_the_handshake_timeout(namespace: str) -> None:
    # S3: TCP connections that never speak ZMTP must not pin file descriptors.
    vault = guarded(namespace, handshake_timeout=0.5)
    async with vault:
        assert vault.endpoint is not None
        host, port = vault.endpoint[len("tcp://") :].rsplit(":", 1)
        before = fd_count()
        idle = []
        for _ in range(200):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.settimeout(5)
            idle.append(s)
        started = time.monotonic()
        closed = 0
        for s in idle:
            closed += await anyio.to_thread.run_sync(closed_by_peer, s)
        elapsed = time.monotonic() - started
        for s in idle:
            s.close()
        assert closed == 200
        assert elapsed < 4
        # The responder holds no descriptor for them any more.
        await eventually(lambda: fd_count() <= before + 5, timeout=5)


async def test_rogue_endpoints_never_receive_calls(namespace: str) -> None:
    # D4: advertisements that point at nothing, at a plain TCP port, and at a ZeroMQ
    # socket that is not meshrpc. With no secret anyone may advertise; still none of
    # them may take a call.
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen(16)
    ctx = zmq.Context.instance()
    foreign: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    foreign.setsockopt(zmq.LINGER, 0)
    foreign_port = foreign.bind_to_random_port("tcp://127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nothing_port = s.getsockname()[1]
    rogue = MdnsDiscovery(interfaces=["127.0.0.1"])
    await rogue.start()
    from meshrpc._protocol.advertisement import Advertisement

    try:
        async with Requester(name="victim", namespace=namespace) as client:
            for i, port in enumerate((nothing_port, plain.getsockname()[1], foreign_port)):
                await rogue.register(
                    Advertisement(
                        f"rogue{i}",
                        f"rogue{i}",
                        "responder",
                        f"tcp://127.0.0.1:{port}",
                        namespace=namespace,
                        types=("open",),
                    )
                )
            await eventually(lambda: len(client.responders()) == 3, timeout=10)
            with pytest.raises(NoResponder):
                await client.send("open", timeout=1.5)
            assert client.statistics()["sent"] == 0
            # The foreign ZeroMQ socket saw the greeting PINGs, and nothing else.
            kinds = []
            while foreign.poll(0):
                frames = foreign.recv_multipart()
                kinds.append(codec.decode(frames[-1]).__class__.__name__)
            assert set(kinds) <= {"Ping"}
    finally:
        await rogue.aclose()
        foreign.close(linger=0)
        plain.close()


async def test_a_flood_of_advertisements_is_capped(namespace: str) -> None:
    from meshrpc._protocol.advertisement import Advertisement
    from meshrpc.discovery.memory import MemoryDiscovery, MemoryRegistry

    registry = MemoryRegistry()
    flooder = MemoryDiscovery(registry)
    await flooder.start()
    try:
        async with Requester(
            name="victim",
            namespace=namespace,
            max_peers=50,
            discovery=MemoryDiscovery(registry),
        ) as client:
            for i in range(2000):
                await flooder.register(
                    Advertisement(
                        f"flood{i}",
                        "flood",
                        "responder",
                        f"tcp://127.0.0.1:{20000 + i}",
                        namespace=namespace,
                        types=("open",),
                    )
                )
            await eventually(lambda: client.statistics()["peers_refused"] >= 1950)
            assert client.statistics()["peers"] == 50
    finally:
        await flooder.aclose()


async def test_secret_never_reaches_logs(namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    vault = guarded(namespace)
    async with vault, Requester(name="member", namespace=namespace, secret=SECRET) as client:
        await client.send("open", timeout=10)
        with pytest.raises(NoResponder):
            await client.send("missing", timeout=0.2)
    assert SECRET not in caplog.text
