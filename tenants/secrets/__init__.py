"""Tenant secrets: an envelope-encrypted vault in the database, staged rotation, and the keyring
backend through which the runner resolves values.

Rooms: ``models`` (tables), ``repository`` (all SQL), ``service`` (rules; ``resolve`` is the only
decrypt path), ``schemas`` (wire types), ``crypto`` (AES-GCM envelope), ``master_key`` (loading
the key that wraps every data key), ``keyring_backend`` (``MidwatchKeyring``, ``get_secret``),
``errors`` (the exception tree).
"""
