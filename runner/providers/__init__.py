"""Model providers behind one interface (``complete``); the built-in ``sandbox`` model needs no network."""
