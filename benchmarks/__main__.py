"""``uv run python -m benchmarks [NAME ...]`` (or ``uv run midwatch bench [NAME ...]``): run benchmarks.

Without names, runs the default set: step_latency, throughput, overhead, api_submit, fairness, governance,
recovery, batch_memory. Others: budget_race, dashboard (see docs/BENCHMARKS.md). Needs PostgreSQL and Redis
on localhost.
"""

from __future__ import annotations

import importlib
import sys

ENGINE = ["step_latency", "throughput", "overhead", "recovery", "batch_memory"]
MODULES = {"api_submit": "benchmarks.api_submit", "fairness": "benchmarks.fairness",
           "governance": "benchmarks.governance", "budget_race": "benchmarks.budget_race",
           "dashboard": "benchmarks.dashboard"}
DEFAULT = ["step_latency", "throughput", "overhead", "api_submit", "fairness", "governance", "recovery",
           "batch_memory"]


def main(argv: list[str]) -> int:
    names = argv or DEFAULT
    unknown = [n for n in names if n not in ENGINE and n not in MODULES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ENGINE + list(MODULES))}")
        return 2
    from benchmarks import engine

    for name in names:
        if name in ENGINE:
            engine.main([name])
        else:
            module = importlib.import_module(MODULES[name])
            sys.argv = [MODULES[name]]  # these scripts parse their own options: run them with their defaults
            module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
