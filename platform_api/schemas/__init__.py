"""The one home of the API's wire types: one module per resource, shared shapes in ``common``.

Requests are strict (unknown fields rejected); responses are explicit (an ORM row becomes a response
only through its ``Out`` type, so a new column never leaks by accident). Domain folders under
``tenants/`` hold no wire types: only the API speaks the wire.
"""
