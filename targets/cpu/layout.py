"""The CPU layout pass: convolutions in NHWC with HWIO weights, output channels innermost."""

from __future__ import annotations

import tvm
from tvm import relax

from hwcompile.rewrite import call_name, mutate_functions

from .channel_padding import pad_output_channels
from .conv_transpose import WEIGHT_LAYOUT as PATCH_TRANSPOSE_WEIGHTS
from .conv_transpose import is_patch_transpose
from .depthwise import WEIGHT_LAYOUT as DEPTHWISE_WEIGHTS
from .depthwise import is_depthwise
from .features import simd_floats
from .flush_denormals import flush_tiny_constants
from .guarded_layout import guarded_convert_layout
from .int8_dot import int8_dot_product, int8_lanes
from .int8_epilogue import int8_epilogues
from .integer_graph import integer_graph_passes, pad_through_permute
from .lookup_fusion import layout_transparent_lookups


def cpu_layout(target: tvm.target.Target, report: dict | None = None) -> tvm.transform.Pass:
    """Convolutions in NHWC with HWIO weights: output channels become the SIMD axis.
    Depthwise convolutions too, with HWOI weights: ``depthwise.py`` legalizes and schedules
    them, so a MobileNet/PP-LCNet backbone is NHWC from its first conv to its last, without
    a transpose around each depthwise conv. Other grouped convolutions stay NCHW: TVM's
    grouped NHWC conv computes its input channel per output, which defeats the tile
    (measured 2.5× slower here); in NCHW they vectorize on width.
    Constant operands of elementwise ops are first put where the layout can pass them
    (``constants_like_tensors``). Around it, the integer-graph rewrites of
    ``integer_graph.py`` (uint8 conv operands where the CPU's int8 dot product wants them)
    and output channels padded to whole vector registers (``channel_padding.py``). First,
    weights too small for float32 arithmetic are flushed to zero (``flush_denormals.py``:
    each FMA with a subnormal operand or result takes a microcode assist). ``report["layout"]`` receives how far the conversion went
    (``guarded_layout.py``)."""

    def desired(call: relax.Call) -> dict[str, list[str]]:  # called for every op call
        if call.op.name == "relax.nn.conv2d_transpose":  # TOPI's lowering is NCHW only
            if is_patch_transpose(call):  # conv_transpose.py legalizes these in NHWC
                return {call.op.name: ["NHWC", PATCH_TRANSPOSE_WEIGHTS]}
            return {call.op.name: ["NCHW", "IOHW"]}
        if call.op.name == "relax.nn.conv1d" and int(call.attrs.groups) == 1:
            # as 2-D: in NCW an STFT's few output columns were the vector axis
            return {call.op.name: ["NWC", "WIO"]}
        if call.op.name != "relax.nn.conv2d":
            return {}
        if int(call.attrs.groups) == 1:
            return {"relax.nn.conv2d": ["NHWC", "HWIO"]}
        if is_depthwise(call):
            return {"relax.nn.conv2d": ["NHWC", DEPTHWISE_WEIGHTS]}
        return {"relax.nn.conv2d": ["NCHW", "OIHW"]}

    # Channels padded first: an int8 conv padded to whole dot products then gets its
    # operands in the instruction's type too (8 output channels: 17× slower without).
    return tvm.transform.Sequential([flush_tiny_constants,
                                     pad_output_channels(simd_floats(target), int8_lanes(target)),
                                     *integer_graph_passes(int8_dot_product(target)),
                                     constants_like_tensors,
                                     layout_transparent_lookups(
                                         guarded_convert_layout(desired, _recorder(report))),
                                     pad_through_permute, int8_epilogues(target)], name="CpuLayout")


def _recorder(report: dict | None):
    def record(outcome: str) -> None:
        if report is not None:
            report["layout"] = outcome

    return record


_ELEMENTWISE_BINARY = frozenset(f"relax.{name}" for name in (
    "add", "subtract", "multiply", "divide", "maximum", "minimum"))
_COMMUTATIVE = frozenset({"relax.add", "relax.multiply"})


@relax.expr_functor.mutator
class _ConstantsLikeTensors(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        name = call_name(call)
        if name not in _ELEMENTWISE_BINARY:
            return call
        args = list(call.args)
        if name in _COMMUTATIVE and isinstance(args[0], tvm.ir.Constant) \
                and not isinstance(args[1], tvm.ir.Constant):
            args.reverse()
        ranks = [a.ty.ndim if isinstance(a.ty, relax.TensorType) else -1 for a in args]
        for i, arg in enumerate(args):
            other = ranks[1 - i]
            if isinstance(arg, tvm.ir.Constant) and 0 < ranks[i] < other:
                value = arg.value.numpy()
                args[i] = relax.const(value.reshape((1,) * (other - value.ndim) + value.shape))
        if all(a.same_as(b) for a, b in zip(args, call.args)):
            return call
        return relax.Call(call.op, args, call.attrs)


@tvm.transform.module_pass(opt_level=0, name="ConstantsLikeTensors")
def constants_like_tensors(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Constant operands of elementwise binary ops put where ConvertLayout's binary-op rule
    lets the layout through: second (the rule takes the first operand's layout, and a
    constant's is the original one) and at the other operand's rank, with leading 1s (the
    rule keeps ops whose operands differ in rank in the original layout). The same values
    either way. paddle2onnx writes LCNetV3's learnable affine as ``multiply(scale, x)`` and
    hard-swish's 3 and 6 with shape (1,): each such op sat between two transposes (42 in
    ppocrv4_det, 121 in layout_cdla)."""
    return mutate_functions(_ConstantsLikeTensors(mod), mod)
