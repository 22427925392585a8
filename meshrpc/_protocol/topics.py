"""Topic names and subscription patterns (pure).

Topics are dot-separated segments: ``price.eur.usd``. A pattern matches topics
segment by segment, where ``*`` stands for exactly one segment and ``#`` for any
number of segments, zero included — the AMQP convention, so ``price.#`` matches
``price``, ``price.eur`` and ``price.eur.usd``, while ``price.*`` matches only
``price.eur``. Wildcards are whole segments only: ``pri*`` is rejected.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from meshrpc.errors import ConfigError

__all__ = [
    "check_pattern",
    "check_topic",
    "covers",
    "matches",
    "may_overlap",
    "zmq_prefix",
]

_MAX_LEN: Final = 200


def check_topic(topic: str) -> str:
    """Validate a topic to publish.

    Raises:
        ConfigError: empty, too long, with empty segments, newlines or wildcards.
    """
    _check_text(topic, "topic")
    for segment in topic.split("."):
        if segment in ("*", "#") or not segment:
            raise ConfigError(f"topic {topic!r} must not contain wildcards or empty segments")
    return topic


def check_pattern(pattern: str) -> str:
    """Validate a subscription pattern.

    Raises:
        ConfigError: empty, too long, with empty segments, or wildcards inside a segment.
    """
    _check_text(pattern, "pattern")
    for segment in pattern.split("."):
        if not segment or (segment not in ("*", "#") and ("*" in segment or "#" in segment)):
            raise ConfigError(
                f"pattern {pattern!r}: segments must be non-empty, and * or # must be a "
                "whole segment (e.g. 'price.*', 'price.#')"
            )
    return pattern


def matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches ``pattern``."""
    return _match(tuple(pattern.split(".")), tuple(topic.split(".")))


def zmq_prefix(pattern: str) -> str:
    """The longest literal prefix every matching topic starts with (for ZeroMQ filtering)."""
    literal: list[str] = []
    segments = pattern.split(".")
    for index, segment in enumerate(segments):
        if segment == "#":
            # '#' may match zero segments: 'a.#' matches 'a' itself, so no trailing dot.
            return ".".join(literal)
        if segment == "*":
            return ".".join(literal) + "." if literal else ""
        literal.append(segment)
        if index == len(segments) - 1:
            return pattern
    return ".".join(literal)


def may_overlap(a: str, b: str) -> bool:
    """Conservatively, whether some topic could match both patterns (never a false no)."""
    pa, pb = zmq_prefix(a), zmq_prefix(b)
    if not _has_wildcard(a) and not _has_wildcard(b):
        return a == b
    if not _has_wildcard(a):
        return matches(b, a)
    if not _has_wildcard(b):
        return matches(a, b)
    return pa.startswith(pb) or pb.startswith(pa)


def _has_wildcard(pattern: str) -> bool:
    return any(s in ("*", "#") for s in pattern.split("."))


@lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], topic: tuple[str, ...]) -> bool:
    if not pattern:
        return not topic
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # Zero segments, or consume one and stay on '#'.
        return _match(rest, topic) or (bool(topic) and _match(pattern, topic[1:]))
    if not topic:
        return False
    if head == "*" or head == topic[0]:
        return _match(rest, topic[1:])
    return False


def _check_text(value: str, what: str) -> None:
    if not isinstance(value, str) or not value or len(value) > _MAX_LEN or "\n" in value:
        raise ConfigError(
            f"{what} {value!r} must be a non-empty string of at most {_MAX_LEN} characters "
            "without newlines"
        )
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate: it could never go on the wire
            raise ConfigError(f"{what} {value!r} is not valid Unicode text") from None


def covers(allowed: str, pattern: str) -> bool:
    """Whether every topic matching ``pattern`` also matches ``allowed``.

    Never a false yes; a rare false no (``*.#`` does cover ``#``, as a topic has at
    least one segment, but is answered no), which only refuses a subscription.
    """
    return _covers(tuple(allowed.split(".")), tuple(pattern.split(".")))


@lru_cache(maxsize=4096)
def _covers(allowed: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not allowed:
        return not pattern
    head, rest = allowed[0], allowed[1:]
    if head == "#":
        # '#' absorbs any run of the pattern's segments, wildcards included.
        return _covers(rest, pattern) or (bool(pattern) and _covers(allowed, pattern[1:]))
    if not pattern or pattern[0] == "#":
        return False  # only '#' covers '#'
    if head == "*" or head == pattern[0]:
        # '*' covers one literal segment or the pattern's own '*'.
        return _covers(rest, pattern[1:])
    return False
