"""Export the small BERT encoder again with torch's dynamo-based ONNX exporter.

    CORPUS_VENV/bin/python tools/corpus/export_dynamo.py      (needs onnxscript too)

Writes tests/corpus/models/bert_tiny_dynamo.onnx: the same transformers BertModel as
export_bert.py (same config, seed 0), exported by ``torch.onnx.export(..., dynamo=True)``
(torch.export + onnxscript, opset 18, constant folding and optimization on, weights
embedded). Its graph differs from the TorchScript export's (attention as decomposed ops from
the ATen graph, different mask arithmetic), which is the point: a second exporter.
"""

from __future__ import annotations

import torch
from _common import check_with_onnxruntime, output_path, seed_everything, summarize
from export_bert import VOCAB, Encoder, build


def main() -> None:
    seed_everything()
    model = Encoder(build()).eval()
    ids = torch.randint(0, VOCAB, (1, 16))
    mask = torch.ones(1, 16, dtype=torch.int64)
    mask[:, 12:] = 0
    types = torch.zeros(1, 16, dtype=torch.int64)
    types[:, 8:] = 1
    path = output_path("bert_tiny_dynamo")
    program = torch.onnx.export(model, (ids, mask, types), dynamo=True, opset_version=18,
                                input_names=["input_ids", "attention_mask", "token_type_ids"],
                                output_names=["last_hidden_state", "pooler_output"],
                                optimize=True, external_data=False)
    program.save(str(path), external_data=False)
    summarize(path)
    with torch.no_grad():
        expected = [t.numpy() for t in model(ids, mask, types)]
    check_with_onnxruntime(path, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                  "token_type_ids": types.numpy()}, expected)


if __name__ == "__main__":
    main()
