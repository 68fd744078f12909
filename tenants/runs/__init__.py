"""Runs, batch items, step checkpoints, the side-effect ledger, leases and the decision log."""
