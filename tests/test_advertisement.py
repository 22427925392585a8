from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshrpc._protocol.advertisement import Advertisement, check_type_name
from meshrpc.errors import ConfigError, ProtocolError

type_names = st.text(
    alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=60,
)


def make(**overrides: object) -> Advertisement:
    fields: dict[str, object] = {
        "instance_id": "abc123",
        "name": "calc",
        "kind": "responder",
        "endpoint": "tcp://127.0.0.1:5000",
        "namespace": "math",
        "types": ("add", "sub"),
    }
    fields.update(overrides)
    return Advertisement(**fields)  # type: ignore[arg-type]


@given(st.lists(type_names, max_size=80, unique=True), st.booleans())
def test_round_trips_through_txt_properties(types: list[str], batches: bool) -> None:
    ad = make(
        types=tuple(types), version="1.2.0", key="k", environment="prod", pid=42, batches=batches
    )
    props = ad.to_properties()
    assert all(len(k) + 1 + len(v.encode()) <= 255 for k, v in props.items())
    wire = {k.encode(): v.encode() for k, v in props.items()}
    assert Advertisement.from_properties(wire) == ad
    assert ("mp" in props) == batches  # absent from an older responder's record


@pytest.mark.parametrize(
    "props",
    [
        {},
        {b"v": b"1", b"id": b"x", b"n": b"a"},  # no kind
        {b"v": b"x", b"id": b"x", b"n": b"a", b"k": b"responder"},
        {b"v": b"1", b"id": b"", b"n": b"a", b"k": b"responder"},
        {b"v": b"1", b"id": b"x", b"n": b"a", b"k": b"martian"},
        {b"v": b"1", b"id": b"x", b"n": b"a", b"k": b"responder", b"e": b"http://x"},
        {b"v": b"1", b"id": b"\xff", b"n": b"a", b"k": b"responder"},
    ],
)
def test_malformed_properties_are_protocol_errors(props: dict[bytes, bytes]) -> None:
    with pytest.raises(ProtocolError):
        Advertisement.from_properties(props)


def test_partition_labels_must_all_match() -> None:
    ad = make(key="k", environment="prod")
    assert ad.same_mesh("math", "k", "prod")
    assert not ad.same_mesh("math", "", "prod")
    assert not ad.same_mesh("other", "k", "prod")
    assert not ad.same_mesh("math", "k", "dev")


@pytest.mark.parametrize("bad", ["", "a\nb", "x" * 201, "add.\ud800"])
def test_type_names_are_checked(bad: str) -> None:
    with pytest.raises(ConfigError):
        check_type_name(bad)
