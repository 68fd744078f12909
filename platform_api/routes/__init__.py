"""Route handlers by resource. Each handler owns its transaction (``unit_of_work``)."""
