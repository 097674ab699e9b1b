"""Built-in graph rewrites, one module per family; importing registers them."""

from . import fold, prune  # noqa: F401
