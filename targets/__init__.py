"""Built-in targets, one module (or package) each; importing registers them."""

from . import cpu  # noqa: F401
