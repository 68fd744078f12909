"""Outbound webhooks: tenant endpoints and the delivery outbox (sent by runner.webhooks, signed with HMAC)."""
