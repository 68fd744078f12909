"""Benchmarks: one script per figure, ``uv run python -m benchmarks.<name>``, JSON in ``benchmarks/results/``."""
