"""At the egress layer: with the rehearsal's guard installed, no hop leaves for anything but the rehearsal
upstream, whatever the agent's scope allows, and a redirect cannot smuggle one out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from runner.rehearsal.upstream import CONTEXT_HEADER
from runner.rehearsal.worker import RehearsalGuard
from runner.sandbox_upstream import FaultyUpstream, ok, redirect
from runner.tools.egress import EgressBlocked, EgressClient, EgressPolicy, set_egress_guard
from tenants.rehearsals.space import SpaceRun


@pytest.fixture
def pair() -> Iterator[tuple[FaultyUpstream, FaultyUpstream]]:
    with FaultyUpstream() as rehearsal, FaultyUpstream() as production:
        yield rehearsal, production


@pytest.fixture
def guarded(pair: tuple[FaultyUpstream, FaultyUpstream], tmp_path: Path) -> Iterator[tuple[RehearsalGuard, Path]]:
    rehearsal, _ = pair
    log = tmp_path / "egress.jsonl"
    guard = RehearsalGuard([rehearsal.netloc], log, {"run_1": SpaceRun("run_1", rep=2, offset=0)})
    set_egress_guard(guard)
    try:
        yield guard, log
    finally:
        set_egress_guard(None)


def _client(*upstreams: FaultyUpstream) -> EgressClient:
    # The agent's scope would allow both: the guard, not the scope, keeps the rehearsal in.
    return EgressClient(EgressPolicy(allowed_hosts=[u.netloc for u in upstreams], allow_loopback=True))


def test_a_hop_to_anything_but_the_rehearsal_upstream_is_refused_and_logged(
        pair: tuple[FaultyUpstream, FaultyUpstream], guarded: tuple[RehearsalGuard, Path]) -> None:
    rehearsal, production = pair
    _, log = guarded
    client = _client(rehearsal, production)
    with pytest.raises(EgressBlocked, match="only its fault-injecting upstream"):
        client.request("GET", f"{production.url}/orders/1")
    assert production.requests == []
    assert client.request("GET", f"{rehearsal.url}/orders/1").status == 200
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["port"], x["allowed"]) for x in lines] == [(production.port, False), (rehearsal.port, True)]


def test_a_redirect_from_the_rehearsal_upstream_to_a_real_host_is_refused(
        pair: tuple[FaultyUpstream, FaultyUpstream], guarded: tuple[RehearsalGuard, Path]) -> None:
    rehearsal, production = pair
    production.script("/steal", [ok({"secret": "data"})])
    rehearsal.script("/orders/1", [redirect(f"{production.url}/steal")])
    with pytest.raises(EgressBlocked):
        _client(rehearsal, production).request("GET", f"{rehearsal.url}/orders/1")
    assert production.requests == [] and len(rehearsal.requests) == 1


def test_each_hop_carries_the_call_it_belongs_to(pair: tuple[FaultyUpstream, FaultyUpstream],
                                                 guarded: tuple[RehearsalGuard, Path]) -> None:
    rehearsal, _ = pair
    with structlog.contextvars.bound_contextvars(run_id="run_1", item=4, step="send"):
        _client(rehearsal).request("POST", f"{rehearsal.url}/mail", json={"to": "x"})
    assert rehearsal.requests[-1].headers[CONTEXT_HEADER.lower()] == "rep=2;item=4;step=send"
