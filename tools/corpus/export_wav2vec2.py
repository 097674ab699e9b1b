"""Export a small wav2vec 2.0 audio encoder (transformers' Wav2Vec2Model) to ONNX.

    CORPUS_VENV/bin/python tools/corpus/export_wav2vec2.py

Writes tests/corpus/models/wav2vec2_tiny.onnx: the real transformers Wav2Vec2Model from a
small Wav2Vec2Config (conv feature encoder 3 × 32 channels with GroupNorm and GELU,
convolutional position embedding, 2 transformer layers of width 64 with LayerNorm and GELU),
seed 0, no pretrained weights. Input: raw 16 kHz audio (batch × samples, float32, dynamic
axes); output: last_hidden_state. TorchScript exporter (``dynamo=False``), opset 17.
"""

from __future__ import annotations

import torch
from _common import check_with_onnxruntime, output_path, seed_everything, summarize
from transformers import Wav2Vec2Config, Wav2Vec2Model


class Encoder(torch.nn.Module):
    """Only last_hidden_state (the model also returns the conv features)."""

    def __init__(self, model: Wav2Vec2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.model(input_values)[0]


def main() -> None:
    seed_everything()
    config = Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, conv_dim=(32, 32, 32),
                            conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            feat_extract_norm="group", do_stable_layer_norm=False,
                            mask_time_prob=0.0, attn_implementation="eager")
    model = Wav2Vec2Model(config)
    model.config.return_dict = False
    model = Encoder(model).eval()
    t = torch.arange(4000) / 16000.0
    audio = (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(4000)).unsqueeze(0)
    path = output_path("wav2vec2_tiny")
    torch.onnx.export(model, (audio,), str(path), dynamo=False, opset_version=17,
                      input_names=["input_values"], output_names=["last_hidden_state"],
                      dynamic_axes={"input_values": {0: "batch", 1: "samples"},
                                    "last_hidden_state": {0: "batch", 1: "frames"}})
    summarize(path)
    with torch.no_grad():
        expected = [model(audio).numpy()]
    check_with_onnxruntime(path, {"input_values": audio.numpy()}, expected)


if __name__ == "__main__":
    main()
