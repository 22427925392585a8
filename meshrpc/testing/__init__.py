"""Helpers for testing meshrpc backends and applications (needs pytest and anyio).

``meshrpc.testing.discovery`` is the conformance suite every discovery backend passes.
"""
