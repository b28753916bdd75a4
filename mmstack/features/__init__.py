"""Feature blocks, one module per block, registered by short name (see registry.py)."""
