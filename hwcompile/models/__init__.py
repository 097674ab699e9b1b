"""The project's own generated models.

- :mod:`hwcompile.models.digits`: the reference example, a small CNN trained on
  scikit-learn's digits (``python -m hwcompile.models.digits OUT.onnx``).
- :mod:`hwcompile.models.zoo`: random-weight test models (MLP, depthwise/grouped CNN, layout
  ops, ResNet-18 topology, a structured-pruning test bed).
- :mod:`hwcompile.models.graph` / :mod:`hwcompile.models.nn`: the builder they share and the
  numpy trainer.
"""
