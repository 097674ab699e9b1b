"""Built-in targets, one module (or package) each; importing registers them."""

from . import cpu, cuda  # noqa: F401
from .vta import target as _vta_target  # noqa: F401
