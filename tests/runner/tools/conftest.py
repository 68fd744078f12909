"""Fixtures for the dependency-failure tests: a started fault-injecting upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runner.sandbox_upstream import FaultyUpstream


@pytest.fixture
def upstream() -> Iterator[FaultyUpstream]:
    """A FaultyUpstream on 127.0.0.1 (random port), stopped after the test."""
    with FaultyUpstream() as up:
        yield up
