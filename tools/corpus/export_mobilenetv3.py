"""Export a MobileNetV3-small classifier built from timm's own blocks to ONNX.

    CORPUS_VENV/bin/python tools/corpus/export_mobilenetv3.py

Writes tests/corpus/models/mobilenetv3_small.onnx: timm's MobileNetV3 class with the
MobileNetV3-small architecture definition (depthwise separable and inverted-residual blocks,
hard-swish, squeeze-excite with hard-sigmoid gates, as in ``timm.models.mobilenetv3``'s
``mobilenetv3_small_*``) at channel multiplier 0.5, with a 256-wide head instead of 1024 and
10 classes so that the file stays under 2 MB. Random weights (seed 0); BatchNorm statistics
are randomized too, so folding them is not a no-op. TorchScript exporter (``dynamo=False``),
opset 17, dynamic batch and spatial axes.
"""

from __future__ import annotations

from functools import partial

import torch
from _common import check_with_onnxruntime, output_path, seed_everything, summarize
from timm.layers import get_act_layer
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.mobilenetv3 import MobileNetV3

# timm.models.mobilenetv3._gen_mobilenet_v3, variant "small" (not minimal)
SMALL_ARCH = [
    ["ds_r1_k3_s2_e1_c16_se0.25_nre"],
    ["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],
    ["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"],
    ["ir_r2_k5_s1_e3_c48_se0.25"],
    ["ir_r3_k5_s2_e6_c96_se0.25"],
    ["cn_r1_k1_s1_c576"],
]
MULTIPLIER = 0.5


def build() -> MobileNetV3:
    se_layer = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=torch.nn.ReLU,
                       rd_round_fn=round_channels)
    return MobileNetV3(block_args=decode_arch_def(SMALL_ARCH), num_classes=10,
                       num_features=256, stem_size=16, fix_stem=True,
                       round_chs_fn=partial(round_channels, multiplier=MULTIPLIER),
                       act_layer=get_act_layer("hard_swish"), se_layer=se_layer)


def main() -> None:
    seed_everything()
    model = build()
    with torch.no_grad():  # trained-looking BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    image = torch.rand(1, 3, 128, 128) * 2 - 1
    path = output_path("mobilenetv3_small")
    torch.onnx.export(model, (image,), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                    "logits": {0: "batch"}})
    summarize(path)
    with torch.no_grad():
        expected = [model(image).numpy()]
    check_with_onnxruntime(path, {"image": image.numpy()}, expected)


if __name__ == "__main__":
    main()
