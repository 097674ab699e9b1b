"""hwcompile: a hardware-aware model compiler (ONNX → Relax passes → CPU/GPU/VTA artifacts).

Public API: ``compile``, ``load``, ``import_onnx``, ``Model``, ``register_pass``,
``register_target``, ``Target``, ``Constraints``, ``PassContext`` and ``errors``.
"""

from .threads import configure_default_threads

configure_default_threads()  # before TVM's thread pool starts; see threads.py

from . import errors
from .driver import compile
from .frontend import import_onnx
from .model import Model, TensorSpec
from .pipeline import PassContext, register_pass
from .runtime import CompiledModel, load
from .target import Constraints, QuantScheme, Target, register_target

__all__ = [
    "CompiledModel", "Constraints", "Model", "PassContext", "QuantScheme", "Target",
    "TensorSpec", "compile", "errors", "import_onnx", "load", "register_pass", "register_target",
]
