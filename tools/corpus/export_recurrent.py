"""Export a recurrent sequence model (stacked bidirectional LSTM, then a GRU) to ONNX.

    CORPUS_VENV/bin/python tools/corpus/export_recurrent.py

Writes tests/corpus/models/lstm_gru.onnx: features (batch, time, 16) → 2-layer
bidirectional LSTM(32) → GRU(32) → Linear(8) per time step, plus the GRU's final hidden
state. Random weights (seed 0), torch.nn modules, TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``, opset 17) with batch and time as dynamic axes, so
the compiler must be given fixed shapes. See tools/corpus/README.md for the versions.
"""

from __future__ import annotations

import torch
from _common import check_with_onnxruntime, output_path, seed_everything, summarize


class LstmGru(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(16, 32, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = torch.nn.GRU(64, 32, batch_first=True)
        self.head = torch.nn.Linear(32, 8)

    def forward(self, features: torch.Tensor):
        seq, _ = self.lstm(features)
        seq, hidden = self.gru(seq)
        return self.head(seq), hidden


def main() -> None:
    seed_everything()
    model = LstmGru().eval()
    features = torch.randn(1, 20, 16)
    path = output_path("lstm_gru")
    torch.onnx.export(model, (features,), str(path), dynamo=False, opset_version=17,
                      input_names=["features"], output_names=["logits", "gru_state"],
                      dynamic_axes={"features": {0: "batch", 1: "time"},
                                    "logits": {0: "batch", 1: "time"},
                                    "gru_state": {1: "batch"}})
    summarize(path)
    with torch.no_grad():
        expected = [t.numpy() for t in model(features)]
    check_with_onnxruntime(path, {"features": features.numpy()}, expected)


if __name__ == "__main__":
    main()
