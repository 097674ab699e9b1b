"""Transposed convs on the CPU target (targets/cpu/conv_transpose.py) against onnxruntime.

Kernel = stride (DBNet's 2×2/stride-2 upsampling, 3×3/stride 3, non-square, output cropped
by pads): NHWC between NHWC convs, one kernel with the useful multiply-adds only and the
bias/activation fused, no transpose. Every other transposed conv (overlapping kernels,
output padding, dilation, groups) keeps TOPI's NCHW lowering and stays correct."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tvm
from conftest import float_model, ort_run
from onnx import helper, numpy_helper

import hwcompile
from hwcompile.frontend import import_onnx
from hwcompile.target import resolve_target

SIZE = 9  # odd: the register tile's columns do not divide every output width
CIN, COUT = 16, 8


def _upsampling_model(kernel=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0), output_padding=None,
                      dilation=1, group=1, batch: int | str = 1, seed=0) -> onnx.ModelProto:
    """conv 3×3 + ReLU → ConvTranspose (+ bias) → ReLU → conv 3×3 + Sigmoid: the transposed
    conv between NHWC neighbours, as in a DBNet neck and head."""
    rng = np.random.default_rng(seed)

    def weight(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    attrs = {"kernel_shape": list(kernel), "strides": list(stride), "pads": list(pads),
             "group": group, "dilations": [dilation] * 2}
    if output_padding:
        attrs["output_padding"] = list(output_padding)
    inits = [weight("w0", (CIN, 3, 3, 3)), weight("b0", (CIN,)),
             weight("wt", (CIN, COUT // group, *kernel)), weight("bt", (COUT,)),
             weight("w1", (4, COUT, 3, 3)), weight("b1", (4,))]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("ConvTranspose", ["r0", "wt", "bt"], ["t"], **attrs),
             helper.make_node("Relu", ["t"], ["r1"]),
             helper.make_node("Conv", ["r1", "w1", "b1"], ["c1"], pads=[1] * 4),
             helper.make_node("Sigmoid", ["c1"], ["y"])]
    out = [(SIZE - 1) * s + dilation * (k - 1) + 1 - pads[i] - pads[i + 2]
           + (output_padding[i] if output_padding else 0)
           for i, (k, s) in enumerate(zip(kernel, stride))]
    return float_model("upsampling", nodes, inits, {"x": [batch, 3, SIZE, SIZE]},
                       {"y": [batch, 4, *out]})


def _compile_and_compare(tmp_path, model: onnx.ModelProto, batch: int = 1) -> dict:
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    art = hwcompile.compile(str(path), "cpu", tmp_path / "art")
    x = np.random.default_rng(1).uniform(-1, 1, (batch, 3, SIZE, SIZE)).astype(np.float32)
    got, want = hwcompile.load(art)(x), ort_run(model, {"x": x})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    return json.loads((art / "metadata.json").read_text())["target_extra"]["lowering"]


def _kernel_names(model: onnx.ModelProto) -> list[str]:
    """The kernels main calls after the CPU target's layout, legalization and fusion."""
    mod = resolve_target("cpu").tunable_module(import_onnx(model).bound_module())
    return [b.value.args[0].name_hint for block in mod["main"].body.blocks
            for b in block.bindings if isinstance(b.value, tvm.relax.Call)
            and isinstance(b.value.op, tvm.ir.Op) and b.value.op.name == "relax.call_tir"]


PATCH_CASES = {
    "2x2_stride2": {},
    "3x3_stride3": {"kernel": (3, 3), "stride": (3, 3)},
    "2x1_stride2x1": {"kernel": (2, 1), "stride": (2, 1)},
    "cropped_by_pads": {"pads": (1, 0, 1, 1)},
}


@pytest.mark.parametrize("case", list(PATCH_CASES))
def test_kernel_equal_to_stride_is_one_nhwc_kernel(tmp_path, case):
    model = _upsampling_model(**PATCH_CASES[case])
    lowering = _compile_and_compare(tmp_path, model)
    assert lowering == {"pipeline": "hwcompile-cpu", "layout": "full"}
    names = _kernel_names(model)
    transposes = [n for n in names if "transpose" in n and "conv2d_transpose" not in n]
    assert len(transposes) == 2, names  # the model's NCHW input and output only
    patches = [n for n in names if n.startswith("fused_conv2d_transpose_patches")]
    assert len(patches) == 1 and "relu" in patches[0], names  # bias and ReLU fused


def test_symbolic_batch(tmp_path):
    _compile_and_compare(tmp_path, _upsampling_model(batch="N"), batch=3)


GENERIC_CASES = {
    "4x4_stride2_pad1": {"kernel": (4, 4), "pads": (1, 1, 1, 1)},
    "3x3_stride2_output_padding": {"kernel": (3, 3), "pads": (1, 1, 1, 1),
                                   "output_padding": (1, 1)},
    "2x2_stride2_output_padding": {"output_padding": (1, 1)},
    "2x2_stride1": {"stride": (1, 1)},
    "2x2_stride2_dilation2": {"dilation": 2},
    "2x2_stride2_groups2": {"group": 2},
}


@pytest.mark.parametrize("case", list(GENERIC_CASES))
def test_other_transposed_convs_keep_the_generic_lowering(tmp_path, case):
    model = _upsampling_model(**GENERIC_CASES[case])
    _compile_and_compare(tmp_path, model)
    assert not any("patches" in n for n in _kernel_names(model))
