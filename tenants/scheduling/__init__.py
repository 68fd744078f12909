"""Fair dispatch: which runnable run a free worker takes next (weights, caps, priority)."""
