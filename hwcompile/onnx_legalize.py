"""The importer-gap rewrites under their original import path (the ONNX coverage harness and
its tests use it); they live in :mod:`hwcompile.onnx_rewrite.importer_gaps`."""

from .onnx_rewrite.importer_gaps import (
    REWRITES,
    expand_runtime_shape,
    legalize,
    prelu_channel_slope,
    sequence_insert_position,
    slice_attrs_to_split,
    split_to_sequence_static,
)

__all__ = [
    "REWRITES",
    "expand_runtime_shape",
    "legalize",
    "prelu_channel_slope",
    "sequence_insert_position",
    "slice_attrs_to_split",
    "split_to_sequence_static",
]
