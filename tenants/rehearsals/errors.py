"""Errors of rehearsals and the deploy gate (under the package root ``tenants.kit.errors.MidwatchError``).

    MidwatchError
    └── Conflict
        ├── RehearsalRequired      409 rehearsal_required     (the agent requires a passed rehearsal first)
        └── RehearsalInProgress    409 rehearsal_in_progress  (one rehearsal per tenant at a time)
"""

from __future__ import annotations

from tenants.kit.errors import Conflict

__all__ = ["RehearsalInProgress", "RehearsalRequired"]


class RehearsalRequired(Conflict):
    """The agent is marked ``requires_rehearsal`` and the version asked for has not passed one."""

    code = "rehearsal_required"


class RehearsalInProgress(Conflict):
    """The tenant already has a rehearsal queued or running (a rehearsal starts real processes)."""

    code = "rehearsal_in_progress"
