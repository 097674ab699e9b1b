"""The CPU layout pass: convolutions in NHWC with HWIO weights, output channels innermost."""

from __future__ import annotations

import tvm
from tvm import relax

from .channel_padding import pad_output_channels
from .depthwise import WEIGHT_LAYOUT as DEPTHWISE_WEIGHTS
from .depthwise import is_depthwise
from .features import simd_floats
from .guarded_layout import guarded_convert_layout
from .int8_dot import int8_dot_product
from .integer_graph import integer_graph_passes, pad_through_permute
from .lookup_fusion import layout_transparent_lookups


def cpu_layout(target: tvm.target.Target, report: dict | None = None) -> tvm.transform.Pass:
    """Convolutions in NHWC with HWIO weights: output channels become the SIMD axis.
    Depthwise convolutions too, with HWOI weights: ``depthwise.py`` legalizes and schedules
    them, so a MobileNet/PP-LCNet backbone is NHWC from its first conv to its last, without
    a transpose around each depthwise conv. Other grouped convolutions stay NCHW: TVM's
    grouped NHWC conv computes its input channel per output, which defeats the tile
    (measured 2.5× slower here); in NCHW they vectorize on width.
    Around it, the integer-graph rewrites of ``integer_graph.py`` (uint8 conv operands
    where the CPU's int8 dot product wants them) and output channels padded to whole
    vector registers (``channel_padding.py``). ``report["layout"]`` receives how far the
    conversion went (``guarded_layout.py``)."""

    def desired(call: relax.Call) -> dict[str, list[str]]:  # called for every op call
        if call.op.name == "relax.nn.conv2d_transpose":  # legalizes in NCHW only: keep it
            return {call.op.name: ["NCHW", "IOHW"]}
        if call.op.name != "relax.nn.conv2d":
            return {}
        if int(call.attrs.groups) == 1:
            return {"relax.nn.conv2d": ["NHWC", "HWIO"]}
        if is_depthwise(call):
            return {"relax.nn.conv2d": ["NHWC", DEPTHWISE_WEIGHTS]}
        return {"relax.nn.conv2d": ["NCHW", "OIHW"]}

    # Channels padded first: an int8 conv padded to whole dot products then gets its
    # operands in the instruction's type too (8 output channels: 17× slower without).
    return tvm.transform.Sequential([pad_output_channels(simd_floats(target)),
                                     *integer_graph_passes(int8_dot_product(target)),
                                     layout_transparent_lookups(
                                         guarded_convert_layout(desired, _recorder(report))),
                                     pad_through_permute], name="CpuLayout")


def _recorder(report: dict | None):
    def record(outcome: str) -> None:
        if report is not None:
            report["layout"] = outcome

    return record
