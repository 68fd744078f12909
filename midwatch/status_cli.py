"""``midwatch status``: the platform's health for an operator without Grafana, and for scripts.

Exit codes: 0 healthy, 1 degraded, 2 failing, 3 unknown (the database could not be read).
"""

from __future__ import annotations

import json
from typing import Any

from tenants.kit.db import read_only
from tenants.kit.logging import redact
from tenants.observability.service import EXIT_CODES, StatusReport, status_report, take_snapshot
from tenants.observability.service import short_duration as _ago

__all__ = ["render_text", "status_command"]


def render_text(report: StatusReport) -> str:
    """The terminal summary: verdict, one line per problem, then the facts."""
    f: dict[str, Any] = report.facts
    count = len(report.problems)
    lines = [f"Midwatch: {report.status.upper()}"
             + (f" - {count} problem{'s' if count != 1 else ''}" if count else "")
             + f" (checked {report.checked_at.strftime('%Y-%m-%d %H:%M:%S UTC')})"]
    for p in report.problems:
        where = f"[{p.tenant}] " if p.tenant else ""
        lines.append(f"  {p.severity.upper():<8} {p.check:<12} {where}{p.message}")
    lines.append("")
    processes = f["processes"] or []
    if not processes:
        lines.append("processes    none has published a heartbeat")
    for i, proc in enumerate(processes):
        port = f", metrics :{proc['health_port']}" if proc["health_port"] else ""
        threads = f", {proc['threads']} threads" if proc["threads"] else ""
        state = "alive" if proc["alive"] else "SILENT"
        lines.append(f"{'processes' if i == 0 else '':<12} {proc['kind']:<9} {proc['host']} pid {proc['pid']}"
                     f"{threads}{port}: {state}, last heartbeat {_ago(proc['last_seen_s'])} ago")
    r, q, e, a = f["runs"], f["queue"], f["escalations"], f["approvals"]
    lines += [
        f"{'runs':<12} queued {r['queued']} | running {r['running']} | waiting approval {r['waiting_approval']} | "
        f"escalated {r['escalated']} | stuck {r['stuck']}",
        f"{'queue':<12} depth {q['depth']}, oldest waiting {_ago(q['oldest_waiting_s'])}",
        f"{'escalations':<12} {e['waiting']} waiting, oldest {_ago(e['oldest_waiting_s'])}",
        f"{'approvals':<12} {a['waiting']} waiting, oldest {_ago(a['oldest_waiting_s'])}, {a['overdue']} past expiry",
        f"{'other':<12} breakers open {f['breakers_open']} | budgets >= 80% {f['budgets_above_threshold']} | "
        f"secrets overdue {f['secrets_overdue']} | agents below SLO {f['agents_below_slo']} | "
        f"webhooks failing {f['webhooks_failing']} | tenants {f['tenants']}",
    ]
    return "\n".join(lines)


def status_command(fmt: str) -> int:
    """Print the status in ``fmt`` (text or json); return the exit code."""
    try:
        with read_only() as session:
            snapshot = take_snapshot(session)
    except Exception as exc:  # unreachable or not migrated: say so in one line, exit "unknown"
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        reason = redact(f"cannot read the database (is it reachable and migrated?): {type(exc).__name__}: {first}")
        if fmt == "json":
            print(json.dumps({"status": "unknown", "exit_code": EXIT_CODES["unknown"], "problems": [
                {"severity": "failing", "check": "database", "tenant": None, "message": reason}], "facts": {}}))
        else:
            print(f"Midwatch: UNKNOWN - {reason}")
        return EXIT_CODES["unknown"]
    report = status_report(snapshot)
    print(json.dumps(report.to_dict(), indent=2) if fmt == "json" else render_text(report), flush=True)
    return report.exit_code
