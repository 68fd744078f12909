"""Tenants (client companies), API keys and roles."""
