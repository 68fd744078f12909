"""The composition root: the ``midwatch`` command wires tenants, runner, API and dashboard together.

It is the only package that imports all the others; they never import it.
"""
