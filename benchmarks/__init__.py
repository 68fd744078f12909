"""Benchmarks: one script per figure, each printing a summary line and writing JSON to benchmarks/results/."""
