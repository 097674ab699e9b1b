"""Built-in graph rewrites, one module per family; importing registers them."""

from . import fold, mixed_precision, prune, quantize  # noqa: F401
