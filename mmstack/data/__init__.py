"""Task data: declared schemas, loaders, validators and synthetic generators, one module per task."""
