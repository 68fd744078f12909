"""The tamper-evident audit trail: who did what to which object, hash-chained per tenant (and one platform chain)."""
