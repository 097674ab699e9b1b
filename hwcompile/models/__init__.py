"""The examples' model library: the models examples, tests and benchmarks compile. It is no
part of the compiler (no compiler module imports it; tests/test_imports.py checks), and
lives in the installed package because the tests, the benchmarks and the C example's CMake
build (``python -m hwcompile.models.digits``) all regenerate the trained example from it.

- :mod:`hwcompile.models.digits`: the reference example, a small CNN trained on
  scikit-learn's digits (``python -m hwcompile.models.digits OUT.onnx``).
- :mod:`hwcompile.models.nn`: the numpy trainer digits is trained with.
- :mod:`hwcompile.models.zoo`: random-weight test models (MLP, depthwise/grouped CNN, layout
  ops, ResNet-18 topology, a structured-pruning test bed).
- :mod:`hwcompile.models.text_lines`: labelled text-line images (0° / 180°) for the corpus's
  PaddleOCR direction classifier, rendered with Pillow (training and held-out data).
- :mod:`hwcompile.models.graph`: the ONNX graph builder they share;
  :mod:`hwcompile.models.qdq`: onnxruntime's QDQ quantization of a model, as a reference.
"""
