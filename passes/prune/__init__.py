"""Pruning passes: structured channel pruning (``prune``), unstructured sparsity
(``sparsify``), recovery fine-tuning (``finetune``), and sensitivity analysis.
See README.md in this folder."""

from . import finetune, sparsify, structured  # noqa: F401  (importing registers the passes)
