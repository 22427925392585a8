"""Topic and pattern rules (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshrpc._protocol.topics import (
    check_pattern,
    check_topic,
    covers,
    matches,
    may_overlap,
    zmq_prefix,
)
from meshrpc.errors import ConfigError


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("price.eur", "price.eur", True),
        ("price.eur", "price.eurusd", False),
        ("price.*", "price.eur", True),
        ("price.*", "price", False),
        ("price.*", "price.eur.usd", False),
        ("price.#", "price", True),
        ("price.#", "price.eur.usd", True),
        ("price.#", "prices.eur", False),
        ("#", "anything.at.all", True),
        ("*.eur", "price.eur", True),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
    ],
)
def test_matching(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


segments = st.sampled_from(["a", "b", "price", "eur"])
topics_st = st.lists(segments, min_size=1, max_size=5).map(".".join)
patterns_st = st.lists(st.sampled_from(["a", "b", "price", "*", "#"]), min_size=1, max_size=5).map(
    ".".join
)


@given(patterns_st, topics_st)
def test_zmq_prefix_never_filters_out_a_match(pattern: str, topic: str) -> None:
    # ZeroMQ's prefix filter must pass every topic the precise pattern accepts.
    if matches(pattern, topic):
        assert topic.startswith(zmq_prefix(pattern))


@given(patterns_st, patterns_st, topics_st)
def test_overlap_is_never_a_false_no(a: str, b: str, topic: str) -> None:
    if matches(a, topic) and matches(b, topic):
        assert may_overlap(a, b)


@pytest.mark.parametrize("bad", ["", "a..b", "pri*", "a.#b", "x" * 201, "a\nb", "metrics.\ud800"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(ConfigError):
        check_pattern(bad)


@pytest.mark.parametrize("bad", ["", "a.*", "a.#", "a..b", ".a", "a.\udc80"])
def test_bad_topics(bad: str) -> None:
    with pytest.raises(ConfigError):
        check_topic(bad)


# -- covers: a subscription pattern inside an allowed one (the web bridge) ------------

COVER_SEGMENTS = st.sampled_from(["a", "b", "c", "*", "#"])
COVER_PATTERNS = st.lists(COVER_SEGMENTS, min_size=1, max_size=5).map(".".join)
COVER_TOPICS = st.lists(st.sampled_from(["a", "b", "c", "x"]), min_size=1, max_size=6).map(".".join)


@given(COVER_PATTERNS, COVER_PATTERNS, COVER_TOPICS)
def test_a_covered_pattern_never_matches_a_topic_outside_the_allowed_one(
    allowed: str, pattern: str, topic: str
) -> None:
    if covers(allowed, pattern) and matches(pattern, topic):
        assert matches(allowed, topic)


def test_covers_exact_names_and_wildcards() -> None:
    assert covers("metrics.#", "metrics.cpu")
    assert covers("metrics.#", "metrics.*")
    assert covers("metrics.#", "metrics.*.cpu")
    assert covers("metrics.#", "metrics.#")
    assert covers("metrics.*", "metrics.*")
    assert covers("*.cpu", "metrics.cpu")
    assert not covers("metrics.*", "metrics.#")
    assert not covers("metrics.*", "metrics.a.b")
    assert not covers("metrics.#", "#")
    assert not covers("metrics.cpu", "metrics.*")
    assert not covers("metrics.#", "secret.x")
