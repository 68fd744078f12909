"""Human approvals of risky actions: the exact action and its arguments hash, route, expiry, single use."""
