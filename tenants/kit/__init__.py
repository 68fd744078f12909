"""Shared machinery of the domain layer: settings, database, repositories, errors, dispatch.

Everything here is imported by the other ``tenants`` domains and, through them, by
``platform_api``, ``runner`` and ``dashboard``.
"""
