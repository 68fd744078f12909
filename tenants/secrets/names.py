"""The one rule for secret names (no imports beyond ``re``: ``runner.spec`` loads it without the vault).

What ``POST /v1/secrets`` accepts is exactly what a spec's ``scope.secrets``, a tool's auth and a
model's ``api_key_secret`` can reference, so a tenant cannot create a secret no spec can ever use.
"""

from __future__ import annotations

import re

__all__ = ["NAME_PATTERN", "NAME_RULE"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
NAME_RULE = "1-63 lowercase letters, digits, '_' or '-', starting with a letter"
