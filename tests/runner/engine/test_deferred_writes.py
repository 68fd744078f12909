"""A pure step's write is sent without waiting for it (``Journal.commit_later``): PostgreSQL commits it while
the next step runs, and the engine reads its answer before it uses the connection again. These tests watch
the order of the sends, the tool calls and the answers, and break the answer to prove that a lost
connection neither loses a checkpoint nor writes one twice, and that a lost lease stops the slice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Harness

FIVE = """\
apiVersion: midwatch/v1
name: five
scope: {tools: [sandbox.echo]}
steps:
""" + "".join(f"  - {{id: s{i}, tool: sandbox.echo, args: {{i: {i}}}}}\n" for i in range(5))


class _Unsent:
    """A write that never reached the server: the connection failed under it."""

    def __init__(self, step: str) -> None:
        self.step = step

    def row(self) -> Any:
        from sqlalchemy.exc import OperationalError

        raise OperationalError("WITH", {}, Exception("server closed the connection unexpectedly"))


def _watched(monkeypatch: pytest.MonkeyPatch, answer: Callable[[Any], Any] | None = None,
             unsent: str | None = None) -> list[str]:
    """The order of sends (``send sN``), tool calls (``tool sN``) and answers read (``answer sN``); ``answer``
    replaces reading an answer (it gets the sent statement); the write of step ``unsent`` is lost unsent."""
    from runner.tools.sandbox import EchoTool
    from tenants.kit import db
    from tenants.runs import journal

    seen: list[str] = []
    send_raw, row, call = db.send_raw, db.SentStatement.row, EchoTool.call

    def sent(session: Any, statement: Any, params: Any) -> Any:
        step = str(params["cp_step_id"])
        if step == unsent and f"send {step}" not in seen:
            seen.append(f"send {step}")
            return _Unsent(step)
        out = send_raw(session, statement, params)
        setattr(out, "step", step)  # noqa: B010 (not an attribute of the class: the test tags it)
        seen.append(f"send {step}")
        return out

    def answered(self: Any) -> Any:
        seen.append(f"answer {self.step}")
        return answer(self) if answer is not None else row(self)

    def called(self: Any, tool_call: Any) -> Any:
        seen.append(f"tool {tool_call.step_id}")
        return call(self, tool_call)

    monkeypatch.setattr(journal, "send_raw", sent)
    monkeypatch.setattr(db.SentStatement, "row", answered)
    monkeypatch.setattr(EchoTool, "call", called)
    return seen


def _harness(make_harness: Callable[..., Harness], schema: str) -> tuple[Harness, Any]:
    from runner.actors import run_once
    from tenants.kit.settings import get_settings

    h = make_harness(db="postgres", worker=None, extra={"MIDWATCH_DATABASE_URL": schema})
    tenant = h.onboard()
    h.put_agent(tenant, FIVE)
    warm = h.submit(tenant, "five", {"input": None})
    assert run_once(get_settings())
    assert h.run(tenant, warm["id"])["state"] == "succeeded"
    return h, tenant


def _checkpoints(tenant: Any, run_id: str) -> list[str]:
    from sqlalchemy import select

    from tenants.kit.db import unit_of_work
    from tenants.runs.models import StepCheckpoint

    with unit_of_work() as session:
        return list(session.scalars(select(StepCheckpoint.step_id).where(
            StepCheckpoint.tenant_id == tenant.id, StepCheckpoint.run_id == run_id)
            .order_by(StepCheckpoint.item_index, StepCheckpoint.step_index)))


@pytest.mark.postgres
def test_the_next_step_runs_while_a_pure_steps_write_is_in_flight(make_harness: Callable[..., Harness],
                                                                  own_pg_schema: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.actors import run_once
    from tenants.kit.settings import get_settings

    h, tenant = _harness(make_harness, own_pg_schema)
    run = h.submit(tenant, "five", {"input": None})
    seen = _watched(monkeypatch)
    assert run_once(get_settings())
    assert h.run(tenant, run["id"])["state"] == "succeeded"
    # s0..s3 are sent unawaited and answered only after the next step's tool call; s4 ends the run (its write
    # releases the lease) and is written the ordinary way
    assert seen == ["tool s0", "send s0", "tool s1", "answer s0", "send s1", "tool s2", "answer s1", "send s2",
                    "tool s3", "answer s2", "send s3", "tool s4", "answer s3"], seen
    assert _checkpoints(tenant, run["id"]) == ["s0", "s1", "s2", "s3", "s4"]
    assert h.client.get(f"/v1/runs/{run['id']}/events/verify", headers=tenant.headers).json()["ok"] is True


@pytest.mark.postgres
@pytest.mark.parametrize("landed", [True, False], ids=["committed-before-the-loss", "never-arrived"])
def test_a_write_whose_answer_is_lost_is_applied_exactly_once(make_harness: Callable[..., Harness],
                                                              own_pg_schema: str, landed: bool,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection fails before s1's answer is read. Either the server had committed s1 (its answer is
    read, then lost) or s1 never reached it: either way the run ends with each checkpoint once and an
    unbroken decision log (applied again blindly, the first case would fail the run on a duplicate key)."""
    from runner.actors import run_once
    from tenants.kit import db
    from tenants.kit.settings import get_settings

    h, tenant = _harness(make_harness, own_pg_schema)
    run = h.submit(tenant, "five", {"input": None})
    row = db.SentStatement.row
    lost: list[str] = []

    def answer(sent: Any) -> Any:
        if sent.step != "s1" or lost:
            return row(sent)
        lost.append(sent.step)
        row(sent)  # committed; the answer is lost on the way
        return _Unsent(sent.step).row()

    seen = _watched(monkeypatch, answer if landed else None, unsent=None if landed else "s1")
    assert run_once(get_settings())
    # one send of s1 either way (applied again, it goes through the ordinary write)
    assert seen.count("send s1") == 1 and seen.count("answer s1") == int(landed), seen
    assert lost == (["s1"] if landed else []), seen
    assert h.run(tenant, run["id"])["state"] == "succeeded"
    assert _checkpoints(tenant, run["id"]) == ["s0", "s1", "s2", "s3", "s4"]
    events = h.events(tenant, run["id"])
    assert [e["step_id"] for e in events if e["kind"] == "step.succeeded"] == ["s0", "s1", "s2", "s3", "s4"]
    assert h.client.get(f"/v1/runs/{run['id']}/events/verify", headers=tenant.headers).json()["ok"] is True


@pytest.mark.postgres
def test_a_lease_lost_while_a_write_is_in_flight_stops_the_slice(make_harness: Callable[..., Harness],
                                                                 own_pg_schema: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker takes the run over (its fence moves) during s2's tool call: s1's write had landed, s2's
    touches nothing, and the slice stops when it reads that answer; the log still verifies."""
    from sqlalchemy import update

    from runner.actors import run_once
    from runner.tools.sandbox import EchoTool
    from tenants.kit.db import unit_of_work
    from tenants.kit.settings import get_settings
    from tenants.runs.models import Run

    h, tenant = _harness(make_harness, own_pg_schema)
    run = h.submit(tenant, "five", {"input": None})
    call = EchoTool.call

    def taken_over(self: Any, tool_call: Any) -> Any:
        if tool_call.step_id == "s2":
            with unit_of_work() as session:
                session.execute(update(Run).where(Run.tenant_id == tenant.id, Run.id == run["id"])
                                .values(fence=Run.fence + 1))
        return call(self, tool_call)

    monkeypatch.setattr(EchoTool, "call", taken_over)
    assert run_once(get_settings())
    assert _checkpoints(tenant, run["id"]) == ["s0", "s1"]
    assert h.run(tenant, run["id"])["state"] == "running"  # the new owner's, untouched
    assert h.client.get(f"/v1/runs/{run['id']}/events/verify", headers=tenant.headers).json()["ok"] is True


@pytest.mark.postgres
def test_a_waited_write_whose_answer_is_lost_after_it_committed_is_not_applied_twice(
        make_harness: Callable[..., Harness], own_pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same loss on the ordinary path: the last step's write (it ends the run) commits, then the
    connection fails before its answer arrives. The back-off retries the write; applied blindly, the retry
    would hit the checkpoint's key and fail the run as an internal error."""
    from sqlalchemy.exc import OperationalError

    from runner.actors import run_once
    from tenants.kit.settings import get_settings
    from tenants.runs import journal

    h, tenant = _harness(make_harness, own_pg_schema)
    run = h.submit(tenant, "five", {"input": None})
    execute_raw, lost = journal.execute_raw, []

    def answer_lost(session: Any, statement: Any, params: Any) -> Any:
        row = execute_raw(session, statement, params)
        if params.get("cp_step_id") == "s4" and not lost:
            lost.append("s4")
            raise OperationalError("WITH", {}, Exception("server closed the connection unexpectedly"))
        return row

    monkeypatch.setattr(journal, "execute_raw", answer_lost)
    assert run_once(get_settings())
    assert lost == ["s4"]
    assert h.run(tenant, run["id"])["state"] == "succeeded"
    assert _checkpoints(tenant, run["id"]) == ["s0", "s1", "s2", "s3", "s4"]
    assert h.client.get(f"/v1/runs/{run['id']}/events/verify", headers=tenant.headers).json()["ok"] is True
