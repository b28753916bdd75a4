"""Level-1 models: one fold loop (base.py) and one module per family, registered by short key."""
