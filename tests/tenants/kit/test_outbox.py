"""Messages are sent only after the outermost commit — never on a SAVEPOINT release — and dropped on rollback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tenants.kit import db
from tests.conftest import Harness


@pytest.fixture
def sent(make_harness: Callable[..., Harness]) -> Iterator[list[dict[str, Any]]]:
    make_harness(worker=None)
    calls: list[dict[str, Any]] = []
    db.set_dispatcher(lambda actor, kwargs, delay: calls.append(kwargs))
    yield calls


def test_a_savepoint_inside_the_unit_of_work_does_not_send_early(sent: list[dict[str, Any]]) -> None:
    with db.unit_of_work() as session:
        db.enqueue_after_commit(session, "execute_run", run_id="r1")
        with session.begin_nested():
            session.execute(text("SELECT 1"))
        assert sent == [], "sent before the outer commit (a SAVEPOINT release is not a commit)"
        with pytest.raises(RuntimeError), session.begin_nested():
            raise RuntimeError("a nested failure the caller handles")
        db.enqueue_after_commit(session, "execute_run", run_id="r2")
    assert sent == [{"run_id": "r1"}, {"run_id": "r2"}]


def test_a_rolled_back_unit_of_work_sends_nothing(sent: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError), db.unit_of_work() as session:
        db.enqueue_after_commit(session, "execute_run", run_id="r1")
        raise ValueError("the request failed")
    assert sent == []


def test_at_most_caps_one_transactions_messages_of_an_actor_and_delay_and_resets_after_it(
        sent: list[dict[str, Any]]) -> None:
    """A transaction that submits a thousand runs sends a few dozen wake-ups (a woken worker keeps claiming);
    other actors and delays count apart, and the next transaction starts its own count."""
    with db.unit_of_work() as session:
        for n in range(100):
            db.enqueue_after_commit(session, "execute_run", run_id=f"r{n}", at_most=64)
        db.enqueue_after_commit(session, "execute_run", 5.0, run_id="later", at_most=64)
        db.enqueue_after_commit(session, "other", run_id="other", at_most=64)
    assert len(sent) == 66
    assert sent[:64] == [{"run_id": f"r{n}"} for n in range(64)]
    assert {"run_id": "later"} in sent and {"run_id": "other"} in sent
    sent.clear()
    with pytest.raises(ValueError), db.unit_of_work() as session:
        for n in range(64):
            db.enqueue_after_commit(session, "execute_run", run_id=f"x{n}", at_most=64)
        raise ValueError("rolled back: its count goes with it")
    with db.unit_of_work() as session:
        db.enqueue_after_commit(session, "execute_run", run_id="next", at_most=64)
    assert sent == [{"run_id": "next"}]
