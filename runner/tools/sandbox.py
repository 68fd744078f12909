"""Built-in sandbox tools every tenant has: ``sandbox.echo``, ``sandbox.sleep``, ``sandbox.record``."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from runner.deadline import remaining, timed_out
from runner.errors import StepFailed
from runner.tools.base import BuiltinTool, ToolCall
from tenants.kit.db import unit_of_work, with_db_retry
from tenants.sandbox.service import record_effect

__all__ = ["BUILTIN_TOOLS", "EchoTool", "RecordTool", "SleepTool"]

MAX_SLEEP_S = 300.0


class EchoTool(BuiltinTool):
    """Returns its args unchanged."""

    name = "sandbox.echo"
    description = "Return the arguments unchanged (a stand-in for a read-only lookup)."
    args_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    side_effect = False
    idempotent = True

    def call(self, call: ToolCall) -> Any:
        return call.args


class SleepTool(BuiltinTool):
    """Sleeps ``{seconds}`` (at most 300) and returns ``{slept: seconds}``; a step's ``timeout_s`` cuts it
    short (the step then fails as ``dependency``)."""

    name = "sandbox.sleep"
    description = f"Wait the given number of seconds (0 to {MAX_SLEEP_S:g})."
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": MAX_SLEEP_S,
                                   "description": "how long to wait"}},
    }
    side_effect = False
    idempotent = True

    def call(self, call: ToolCall) -> Any:
        args = call.args if isinstance(call.args, dict) else {}
        seconds = args.get("seconds", 0)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds <= MAX_SLEEP_S:
            raise StepFailed("validation", f"sandbox.sleep needs 0 <= seconds <= {MAX_SLEEP_S:g}")
        left = remaining()
        if left is not None and seconds > left:
            time.sleep(left)
            raise timed_out()
        time.sleep(float(seconds))
        return {"slept": seconds}


class RecordTool(BuiltinTool):
    """A side effect: appends its args and idempotency key to the tenant's sandbox list.

    Idempotent: a repeated key is acknowledged without a second entry, like a payment API
    that honours ``Idempotency-Key``.
    """

    name = "sandbox.record"
    description = ("Record the arguments as a side effect in the tenant's sandbox list (a stand-in for "
                   "sending a message or making a payment); idempotent per call.")
    args_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    side_effect = True
    idempotent = True

    def call(self, call: ToolCall) -> Any:
        if call.idempotency_key is None:
            raise StepFailed("internal", "sandbox.record called without an idempotency key")
        key = call.idempotency_key

        def write() -> bool:
            with unit_of_work() as session:
                return record_effect(session, call.tenant_id, key, call.args)

        created = with_db_retry(write, "sandbox.record")  # one row per key: safe to run again
        return {"recorded": True, "duplicate": not created, "idempotency_key": call.idempotency_key}


BUILTIN_TOOLS: dict[str, BuiltinTool] = {t.name: t for t in (EchoTool(), SleepTool(), RecordTool())}
