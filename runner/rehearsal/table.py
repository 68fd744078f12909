"""The rehearsal report for a terminal (``midwatch rehearse --format table``).

One helper per section: the heading and verdict, the summary (end to end, pass^k, wrong answers, side
effects, the worker kill, the queue, humans), the per-step table, escalations and failures, the budget,
fault, egress lines, and the suggested changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runner.rehearsal.wording import pct

__all__ = ["render_table"]


def _kv(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "—"


def _lines(rows: Iterable[list[str]]) -> list[str]:
    table = [list(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]


def render_table(report: dict[str, Any]) -> str:
    """The report for a terminal."""
    out = _heading(report)
    out += _lines(_summary(report))
    out.append("")
    out += _lines(_step_rows(report))
    out += _escalations(report["figures"]["escalations"])
    out += ["", _budget_line(report), _faults_line(report["figures"]["faults"]), _egress_line(report["figures"])]
    out += _changes(report["changes"])
    t = report["timings"]
    out += ["", f"took {t.get('total_s', 0):.1f}s (space ready {t.get('space_ready_s', 0):.1f}s, runs "
                f"{t.get('runs_s', 0):.1f}s)"]
    return "\n".join(out)


def _heading(report: dict[str, Any]) -> list[str]:
    verdict = report["verdict"]
    who = f"{report['agent']}" + (f" v{report['version']}" if report["version"] else " (file)")
    return [f"Rehearsal of {who}" + (f" (tenant {report['tenant']})" if report.get("tenant") else "")
            + f" — profile {report['profile']['name']}, seed {report['seed']}, {report['items']} items x "
              f"{report['repeat']} repetitions",
            f"Verdict: {verdict['result'].upper()} — " + "; ".join(verdict["reasons"]), ""]


def _kill_text(report: dict[str, Any]) -> str:
    kill = report["figures"]["platform"]["worker_kill"]
    recovery = report["timings"].get("recovery_s")
    if kill is None:
        return "not in this profile"
    if not kill["killed"]:
        return "planned, not reached"
    return (f"kill -9 in repetition {kill['repetition']}, item {kill['item']}, step {kill['step']} "
            f"({kill['in_flight']} in flight); progress again after "
            + (f"{recovery:.1f}s" if recovery is not None else "— (never)"))


def _summary(report: dict[str, Any]) -> list[list[str]]:
    f = report["figures"]
    e2e, pk, se, human, platform = f["end_to_end"], f["pass_k"], f["side_effects"], f["human_decisions"], f["platform"]
    target = f"target {pct(pk['min'])}" if pk["min"] is not None else "no target (objective.slo.pass_k)"
    human_text = (f"{human['escalated_items']} item(s) escalated, {human['approvals']} approval(s) answered, "
                  f"{human['unknown_outcomes']} unknown outcome(s) to check")
    summary = [
        ["end to end", f"measured {pct(e2e['measured'])} ({e2e['succeeded']}/{e2e['tries']} tries) | projected "
                       f"{pct(e2e['projected'])} (product of the steps) | SLO {pct(e2e['slo'])}"],
        [f"pass^{pk['k']}", f"{pct(pk['value'])} ({pk['items_all_tries']}/{pk['items']} items succeeded in all "
                            f"{report['repeat']} tries) | {target}"],
        ["wrong answers", f"{e2e['silently_wrong']} tries accepted an answer the rehearsal knew was wrong"],
        ["side effects", f"{se['duplicates']} duplicated (counted at the upstream) | {se['effects']} carried out | "
                         f"{se['resent_keys']} request(s) re-sent an idempotency key"],
        ["worker", _kill_text(report)],
        ["queue", platform["queue"] or "not in this profile"],
        ["humans", human_text],
    ]
    waits = f["waits"]
    if waits["deferred"] or waits["failed_on_open_circuit"]:
        summary.append(["waits", f"{waits['deferred']} step(s) released the worker to wait ({waits['circuit_open']} "
                                 f"on an open circuit breaker); {waits['failed_on_open_circuit']} failed on one"])
    if platform.get("database_restart"):
        summary.append(["database", f"restart command exited {platform['database_restart']['exit_code']}"])
    return summary


def _step_rows(report: dict[str, Any]) -> list[list[str]]:
    latency = report["timings"]["step_latency_ms"]
    rows = [["step", "kind", "reached", "passed", "success", "retries (by category)", "latency p50/p95/max ms"]]
    for s in report["figures"]["steps"]:
        lat = latency.get(s["id"], {})
        passed = f"{s['passed']}" + (f" (+{s['accepted_wrong']} wrong)" if s["accepted_wrong"] else "")
        rows.append([s["id"], s["kind"], str(s["reached"]), passed, pct(s["success"]), _kv(s["retries"]),
                     "/".join("—" if lat.get(q) is None else f"{lat[q]:.0f}" for q in ("p50", "p95", "max"))])
    return rows


def _escalations(esc: dict[str, Any]) -> list[str]:
    if not esc["by_reason"]:
        return []
    return ["", f"escalations and failures ({esc['items']})"] + [
        f"  {g['count']:>3} x {g['step']} [{g['category']}] {g['why']}: {g['example'][:100]}"
        for g in esc["by_reason"][:8]]


def _budget_line(report: dict[str, Any]) -> str:
    budget = report["figures"]["budget"]
    return ("budget  cost ${} in all, ${} for the costliest run (max_cost_usd {}) | steps per item {} of {} | "
            "model calls per item {} of {} | longest run {}s of {}s").format(
                budget["cost_usd_total"], budget["cost_usd_max_run"], budget["max_cost_usd"] or "unset",
                budget["steps_per_item_max"], budget["max_steps"], budget["llm_calls_per_item_max"],
                budget["max_llm_calls"], report["timings"].get("longest_run_s"), budget["max_duration_s"])


def _faults_line(faults: dict[str, dict[str, int]]) -> str:
    return (f"faults  tools: {_kv({k: v for k, v in faults['tools'].items() if k != 'ok'})} | "
            f"models: {_kv({k: v for k, v in faults['models'].items() if k != 'ok'})}")


def _egress_line(figures: dict[str, Any]) -> str:
    eg, faked, missing = figures["egress"], figures["secrets"]["faked"], figures["secrets"]["missing"]
    where = ("all to the rehearsal upstream" if eg["only_rehearsal_upstream"]
             else f"{eg['refused']} REFUSED: {', '.join(eg['refused_hosts'])}")
    return (f"egress  {eg['hops']} request(s), {where}" + f"; secrets faked: {', '.join(faked) or 'none'}"
            + (f"; missing in the tenant: {', '.join(missing)}" if missing else ""))


def _changes(changes: list[dict[str, Any]]) -> list[str]:
    out = ["", "Changes that would most improve it:" if changes else "Changes: none needed, nothing failed."]
    for i, c in enumerate(changes, 1):
        out.append(f"  {i}. {c['change']}")
        out.append(f"     evidence: {c['evidence']}")
    return out
