"""Export a small BERT encoder (transformers' BertModel, random weights) to ONNX.

    CORPUS_VENV/bin/python tools/corpus/export_bert.py

Writes tests/corpus/models/bert_tiny.onnx: the real transformers BertModel built from a
small BertConfig (vocabulary 1000, hidden 64, 2 layers, 4 heads, FFN 128, GELU, eager
attention), seed 0, no pretrained weights. Inputs are token ids, an attention mask and token
type ids (int64, batch × sequence, dynamic axes); outputs last_hidden_state and
pooler_output. TorchScript exporter (``dynamo=False``), opset 17.
"""

from __future__ import annotations

import torch
from _common import check_with_onnxruntime, output_path, seed_everything, summarize
from transformers import BertConfig, BertModel

VOCAB = 1000


class Encoder(torch.nn.Module):
    """Positional inputs for the exporter, passed to BertModel by keyword."""

    def __init__(self, model: BertModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids)
        return out[0], out[1]


def build() -> BertModel:
    """The small BertModel (random weights from the current torch seed)."""
    config = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=128, hidden_act="gelu",
                        attn_implementation="eager")
    bert = BertModel(config)
    bert.config.return_dict = False
    return bert


def main() -> None:
    seed_everything()
    model = Encoder(build()).eval()
    ids = torch.randint(0, VOCAB, (1, 16))
    mask = torch.ones(1, 16, dtype=torch.int64)
    mask[:, 12:] = 0  # padded tail: the mask must matter
    types = torch.zeros(1, 16, dtype=torch.int64)
    types[:, 8:] = 1
    path = output_path("bert_tiny")
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(model, (ids, mask, types), str(path), dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state", "pooler_output"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                    "token_type_ids": axes, "last_hidden_state": axes,
                                    "pooler_output": {0: "batch"}})
    summarize(path)
    with torch.no_grad():
        expected = [t.numpy() for t in model(ids, mask, types)]
    check_with_onnxruntime(path, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                  "token_type_ids": types.numpy()}, expected)


if __name__ == "__main__":
    main()
