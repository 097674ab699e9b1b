"""Generated ONNX test models: fixed random weights, opset 17, checked, byte-deterministic.

Every builder returns an ``onnx.ModelProto`` with one float32 input named ``input`` and one
output named ``output``; the batch dimension is symbolic (``"N"``) unless stated. Weights
are He-initialised from ``numpy.random.default_rng(seed)``; biases and batch-norm
statistics are random too (so folding and pruning see non-trivial values).

=============================  ==================  ==================
builder                        input               output
=============================  ==================  ==================
mlp                            (N, 64)             (N, 10)
depthwise_grouped_cnn          (N, 3, 32, 32)      (N, 10)
concat_split_reshape_transpose (N, 3, 16, 16)      (N, 256, 16)
resnet18_shaped                (B, 3, S, S)        (B, num_classes)
prune_testbed                  (N, 3, 16, 16)      (N, 10)
=============================  ==================  ==================
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from hwcompile.models.graph import Graph, save

__all__ = ["ZOO", "build_graph", "concat_split_reshape_transpose", "depthwise_grouped_cnn",
           "mlp", "prune_testbed", "resnet18_shaped", "save"]

INPUT, OUTPUT = "input", "output"


def _graph_mlp(seed: int = 0) -> Graph:
    g = Graph("mlp", seed, init="random")
    x = g.relu(g.gemm(g.input(INPUT, ("N", 64)), "fc1", 128), "fc1.relu")
    x = g.relu(g.matmul_add(x, "fc2", 64), "fc2.relu")
    g.output(g.gemm(x, "fc3", 10, gain=1.0, output=OUTPUT))
    return g


def _graph_depthwise_grouped_cnn(seed: int = 0) -> Graph:
    g = Graph("depthwise_grouped_cnn", seed, init="random")
    x = g.conv_bn_relu(g.input(INPUT, ("N", 3, 32, 32)), "stem", 16, 3)
    x = g.conv_bn_relu(x, "dw", 16, 3, stride=2, group=16)  # depthwise
    x = g.conv_bn_relu(x, "grouped", 32, 3, group=4)
    x = g.relu(g.conv(x, "pw", 32, 1, bias=True), "pw.relu")  # a Conv with bias, no BN
    x = g.flatten(g.global_avg_pool(x, "pool"), "flatten")
    g.output(g.gemm(x, "fc", 10, gain=1.0, output=OUTPUT))
    return g


def _graph_concat_split_reshape_transpose(seed: int = 0) -> Graph:
    g = Graph("concat_split_reshape_transpose", seed, init="random")
    x = g.relu(g.conv(g.input(INPUT, ("N", 3, 16, 16)), "conv", 8, 3, bias=True), "conv.relu")
    a, b = g.split(x, [4, 4], axis=1, name="split")
    x = g.concat([a, g.transpose(b, [0, 1, 3, 2], "swap_hw")], axis=1, name="concat")
    x = g.reshape(x, [0, 8, -1], "to_tokens")            # (N, 8, 256)
    x = g.transpose(x, [0, 2, 1], "tokens_last")         # (N, 256, 8)
    g.output(g.matmul_add(x, "proj", 16, output=OUTPUT))
    return g


def _graph_resnet18_shaped(batch: int | str = 1, image: int = 224, num_classes: int = 1000,
                           seed: int = 0) -> Graph:
    g = Graph("resnet18_shaped", seed, init="random")
    x = g.conv_bn_relu(g.input(INPUT, (batch, 3, image, image)), "conv1", 64, 7, stride=2)
    x = g.maxpool(x, 3, 2, pad=1, name="maxpool")
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            name, stride = f"layer{stage}.{block}", 2 if stage > 1 and block == 0 else 1
            y = g.conv_bn_relu(x, f"{name}.conv1", cout, 3, stride)
            y = g.conv_bn_relu(y, f"{name}.conv2", cout, 3, relu=False)
            if stride != 1 or cin != cout:
                x = g.conv_bn_relu(x, f"{name}.downsample", cout, 1, stride, relu=False)
            x = g.relu(g.add(y, x, f"{name}.add"), f"{name}.relu")
            cin = cout
    x = g.flatten(g.global_avg_pool(x, "avgpool"), "flatten")
    g.output(g.gemm(x, "fc", num_classes, gain=1.0, output=OUTPUT))
    return g


def _graph_prune_testbed(seed: int = 0) -> Graph:
    g = Graph("prune_testbed", seed, init="random")
    stem = g.conv_bn_relu(g.input(INPUT, ("N", 3, 16, 16)), "stem", 16, 3)
    r = g.conv_bn_relu(stem, "res.conv1", 16, 3)
    r = g.conv_bn_relu(r, "res.conv2", 16, 3, relu=False)
    r = g.relu(g.add(r, stem, "res.add"), "res.relu")     # couples stem and res.conv2
    a, b = g.split(r, [8, 8], axis=1, name="split")
    a = g.conv_bn_relu(a, "branch_a", 8, 3)
    b = g.conv_bn_relu(b, "branch_dw", 8, 3, group=8)      # depthwise
    x = g.concat([a, b], axis=1, name="concat")
    x = g.conv_bn_relu(x, "grouped", 32, 3, stride=2, group=4)
    x = g.conv_bn_relu(x, "squeeze", 8, 3, stride=2)       # (N, 8, 4, 4)
    x = g.flatten(x, "flatten")                            # 8 channels x 16 positions
    x = g.relu(g.gemm(x, "fc1", 32), "fc1.relu")
    g.output(g.gemm(x, "fc2", 10, gain=1.0, output=OUTPUT))
    return g


_GRAPHS: dict[str, Callable[..., Graph]] = {
    "mlp": _graph_mlp,
    "depthwise_grouped_cnn": _graph_depthwise_grouped_cnn,
    "concat_split_reshape_transpose": _graph_concat_split_reshape_transpose,
    "resnet18_shaped": _graph_resnet18_shaped,
    "prune_testbed": _graph_prune_testbed,
}


def build_graph(name: str, **options: object) -> Graph:
    """The zoo model ``name`` as a :class:`Graph` (e.g. to run it with hwcompile.models.nn)."""
    return _GRAPHS[name](**options)


def mlp(seed: int = 0) -> onnx.ModelProto:
    """64 → Gemm 128 → Relu → MatMul+Add 64 → Relu → Gemm 10."""
    return _graph_mlp(seed).to_onnx("mlp: Gemm and MatMul+Add dense layers")


def depthwise_grouped_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv+BN+Relu stem, depthwise conv (group=16, stride 2), grouped conv (group=4),
    a 1x1 Conv with bias, GlobalAveragePool, Gemm 10."""
    return _graph_depthwise_grouped_cnn(seed).to_onnx("depthwise and grouped convolutions")


def concat_split_reshape_transpose(seed: int = 0) -> onnx.ModelProto:
    """Conv → Split in two → Transpose(H,W) of one half → Concat → Reshape (N,8,256) →
    Transpose (N,256,8) → MatMul+Add (N,256,16)."""
    return _graph_concat_split_reshape_transpose(seed).to_onnx("layout ops around a conv")


def resnet18_shaped(batch: int | str = 1, image: int = 224, num_classes: int = 1000,
                    seed: int = 0) -> onnx.ModelProto:
    """The ResNet-18 topology (torchvision layer names) with random weights.

    7x7/2 stem, 3x3/2 max-pool, four stages of two BasicBlocks (64/128/256/512 channels,
    1x1 downsample convs where the shape changes), global average pool, Gemm. ``batch`` may
    be a string for a symbolic batch dimension; ``image`` must be at least 32.
    """
    if image < 32:
        raise ValueError(f"resnet18_shaped needs image >= 32, got {image}")
    return _graph_resnet18_shaped(batch, image, num_classes, seed).to_onnx(
        "ResNet-18 topology, random weights")


def prune_testbed(seed: int = 0) -> onnx.ModelProto:
    """Structures that couple channels for structured pruning: a residual Add, Split into
    a regular and a depthwise branch, Concat, a grouped conv, Flatten → Gemm."""
    return _graph_prune_testbed(seed).to_onnx("structured-pruning test bed")


ZOO: dict[str, Callable[..., onnx.ModelProto]] = {
    "mlp": mlp,
    "depthwise_grouped_cnn": depthwise_grouped_cnn,
    "concat_split_reshape_transpose": concat_split_reshape_transpose,
    "resnet18_shaped": resnet18_shaped,
    "prune_testbed": prune_testbed,
}
