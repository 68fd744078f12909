"""``governance``: what an output schema, three CEL rules per step and an approval rule that never matches
cost per step, on the embedded default (SQLite, in this process): a 20-step batch agent over 50 items,
bare and governed, in the same run (24 interleaved pairs). Target: at most 0.05 ms more per step.

The two agents run in interleaved pairs (bare, governed) and the figure is the median of the pairs'
differences: a step here is about 1-2 ms of CPU (SQLite's commit included), and a 2-core machine of this
class varies by about 15 % from second to second, more than the difference measured, so a median of each
agent alone could show noise as overhead. The CPU time per step (this process) is printed beside it.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks._common import median, midwatch_env, write_result

STEPS = 20
ITEMS = 10
RUNS = 100


def _spec(name: str, governed: bool) -> str:
    lines = [f"apiVersion: midwatch/v1\nname: {name}\nscope: {{tools: [sandbox.echo]}}\n",
             f"autonomy: {{max_steps: {STEPS}"]
    if governed:
        lines.append(", approvals: [{when: \"step.tool == 'sandbox.echo' && step.args.n > 1000000\", "
                     "route: approver}]")
    lines.append("}\ninput: {items: true}\nsteps:\n")
    for i in range(STEPS):
        lines.append(f"  - id: s{i}\n    tool: sandbox.echo\n    args: {{n: \"{{{{ item.n }}}}\", step: {i}}}\n")
        if governed:
            lines.append("    output_schema: {type: object, required: [n, step], properties: "
                         "{n: {type: integer}, step: {type: integer}}}\n")
            lines.append("    rules: ['output.n >= 0', 'output.step < 100', 'size(steps) <= 50']\n")
    return "".join(lines)


@contextmanager
def _embedded() -> Iterator[None]:
    with tempfile.TemporaryDirectory() as data, midwatch_env({
            "MIDWATCH_DATA_DIR": data, "MIDWATCH_DATABASE_URL": "", "MIDWATCH_BROKER_URL": "stub://",
            "MIDWATCH_OPERATOR_KEY": f"mw_op_bench_{secrets.token_urlsafe(24)}", "MIDWATCH_LOG_LEVEL": "warning"}):
        yield


def _ms_per_step(tenant_id: str, version: Any, name: str) -> tuple[float, float]:
    """(wall ms, CPU ms) per step of one run of ``name``."""
    from runner.actors import run_once
    from tenants.kit.db import unit_of_work
    from tenants.kit.settings import get_settings
    from tenants.runs.service import get_run, submit_run

    with unit_of_work() as session:
        run_id = submit_run(session, tenant_id, version, name, None, [{"n": i} for i in range(ITEMS)], None).run.id
    started, cpu = time.perf_counter(), time.process_time()
    while run_once(get_settings()):
        pass
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    with unit_of_work() as session:
        run = get_run(session, tenant_id, run_id)
        assert run.state == "succeeded", (run.state, run.reason)
    return elapsed / (STEPS * ITEMS) * 1000, cpu / (STEPS * ITEMS) * 1000


def main() -> None:
    from runner.spec import load_spec
    from tenants.accounts.service import onboard_tenant
    from tenants.agents.service import store_version
    from tenants.kit.db import unit_of_work

    with _embedded():
        agents = {}
        with unit_of_work() as session:
            tenant, _ = onboard_tenant(session, f"gov-{secrets.token_hex(3)}")
            for name, governed in (("bare", False), ("governed", True)):
                spec = load_spec(_spec(name, governed))
                stored = store_version(session, tenant.id, name, spec.model_dump(mode="json", by_alias=True), [])
                session.expunge(stored.version)
                agents[name] = stored.version
        _ms_per_step(tenant.id, agents["bare"], "bare")  # warm-up: imports, caches, compiled rules
        _ms_per_step(tenant.id, agents["governed"], "governed")
        samples: dict[str, list[tuple[float, float]]] = {"bare": [], "governed": []}
        for i in range(RUNS):
            order = ("bare", "governed") if i % 2 == 0 else ("governed", "bare")  # no agent always runs second
            for name in order:
                samples[name].append(_ms_per_step(tenant.id, agents[name], name))
    pairs = list(zip(samples["bare"], samples["governed"], strict=True))
    differences = sorted(g[0] - b[0] for b, g in pairs)
    overhead = median(differences)
    cpu_overhead = median([g[1] - b[1] for b, g in pairs])
    quartiles = (differences[len(differences) // 4], differences[(3 * len(differences)) // 4])
    bare_ms, governed_ms = median([b[0] for b, _ in pairs]), median([g[0] for _, g in pairs])
    print(f"governance: {overhead:.4f} ms more per step with an output schema, 3 CEL rules and an approval rule "
          f"(median of {RUNS} interleaved pairs; governed {governed_ms:.3f} ms/step, bare {bare_ms:.3f} ms/step; "
          f"CPU time {cpu_overhead:.4f} ms more per step; the pairs' differences have quartiles "
          f"{quartiles[0]:.3f} and {quartiles[1]:.3f} ms, this machine's noise; {STEPS} steps x {ITEMS} items, "
          "embedded default) (target <= 0.05 ms)")
    write_result("governance", {"bare_ms_per_step": bare_ms, "governed_ms_per_step": governed_ms,
                                "overhead_ms_per_step": overhead, "cpu_overhead_ms_per_step": cpu_overhead,
                                "difference_quartiles_ms": quartiles,
                                "samples": samples})


if __name__ == "__main__":
    main()
