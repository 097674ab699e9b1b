"""Export a YOLOv8 detector (ultralytics, random weights, reduced width) with ultralytics' exporter.

    CORPUS_VENV/bin/python tools/corpus/export_yolo.py

Writes tests/corpus/models/yolov8_tiny.onnx: ultralytics' own yolov8.yaml architecture
(C2f blocks, SPPF, PAN neck, anchor-free decoupled Detect head with DFL and box decoding)
at depth 0.33, width 0.125 and at most 256 channels before scaling (the "n" scale is
0.33/0.25/1024) with 8 classes, so the file stays under 2 MB; random weights (seed 0), nothing downloaded. Exported with
``YOLO.export(format="onnx", dynamic=True, simplify=False, opset=17)``, which fuses
Conv+BN and calls the TorchScript exporter. Output: (batch, 4 + 8, anchors).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks, no hub

import torch
import yaml
from _common import check_with_onnxruntime, output_path, seed_everything, summarize
from ultralytics import YOLO
from ultralytics.nn.tasks import yaml_model_load

IMGSZ = 256


def main() -> None:
    seed_everything()
    torch.use_deterministic_algorithms(False)  # ultralytics' init uses non-deterministic ops
    cfg = yaml_model_load("yolov8n.yaml")
    cfg = {k: v for k, v in cfg.items() if k not in ("scale", "yaml_file")}
    cfg["scales"] = {"t": [0.33, 0.125, 256]}
    cfg["nc"] = 8
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # ultralytics writes its export into the working directory
        yaml_path = Path(tmp) / "yolov8-tiny.yaml"  # no n/s/m/l/x suffix: scale "t" is used
        yaml_path.write_text(yaml.safe_dump(cfg))
        model = YOLO(str(yaml_path), task="detect")
        model.model.eval()
        exported = Path(model.export(format="onnx", imgsz=IMGSZ, dynamic=True, simplify=False,
                                     opset=17, batch=1, device="cpu"))
        path = output_path("yolov8_tiny")
        shutil.copyfile(exported, path)
        net = model.model.eval()
    summarize(path)
    image = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        out = net(image)
        expected = [(out[0] if isinstance(out, (list, tuple)) else out).numpy()]
    check_with_onnxruntime(path, {"images": image.numpy()}, expected)


if __name__ == "__main__":
    main()
