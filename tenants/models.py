"""Imports every domain's tables so ``Base.metadata`` is complete (Alembic and tests use this).

A new domain folder with tables adds its ``models`` module here.
"""

import tenants.accounts.models
import tenants.agents.models
import tenants.approvals.models
import tenants.audit.models
import tenants.budgets.models
import tenants.catalog.models
import tenants.observability.models
import tenants.rehearsals.models
import tenants.reliability.models
import tenants.runs.models
import tenants.sandbox.models
import tenants.scheduling.models
import tenants.secrets.models
import tenants.security.models
import tenants.webhooks.models  # noqa: F401 - imported for their tables
from tenants.kit.db import Base

__all__ = ["Base"]
