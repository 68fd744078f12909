"""The private execution engine. Other packages use ``runner.actors`` and ``runner.spec`` only."""
