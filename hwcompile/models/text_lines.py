"""Labelled text-line images for a text-direction classifier (0° or 180°), rendered with Pillow.

PaddleOCR's direction classifier (the corpus model ``ppocr_mobile_v2_cls``) decides whether
a cropped text line is upright or upside down. Its task's labels cost nothing to make: render
a line of random words and digits, and rotate it by 180° for label 1. The images are
preprocessed as PaddleOCR's classifier does (``ClsResizeImg``): resized to height 48 keeping
the aspect ratio (at most 192 wide), scaled to (x/255 − 0.5)/0.5, CHW, right-padded with 0
to 3×48×192.

Everything depends only on the seed (and on the fonts, which ship with matplotlib, a
dependency of hwcompile: DejaVu Sans, Serif and Mono), so a data set is reproducible and a
train/held-out split is two disjoint seeds' worth of lines (``train_val``).

    python -m hwcompile.models.text_lines OUT.npz --samples 512 [--seed 0] [--val 256]
"""

from __future__ import annotations

import argparse
import math
from functools import cache
from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 48, 192
LABELS = ("0", "180")  # class 1: the line is upside down
INPUT = "x"  # ppocr_mobile_v2_cls's input name
_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
          "DejaVuSansMono.ttf")
_WORDS = ("the", "invoice", "total", "amount", "date", "street", "order", "number", "page",
          "report", "customer", "price", "quantity", "address", "phone", "payment", "delivery",
          "account", "station", "market", "Paris", "London", "Model", "Data", "Table", "Room",
          "Name", "City", "Bank", "Tel", "Fax", "No.", "km", "kg", "USD", "EUR", "Ltd",
          "January", "March", "Friday", "open", "closed", "hotel", "train", "coffee", "receipt")


@cache
def _font_paths() -> tuple[Path, ...]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return tuple(folder / name for name in _FONTS)


@cache
def _font(index: int, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(_font_paths()[index]), size)


def _text(rng: np.random.Generator) -> str:
    """A few words, numbers, dates or amounts, like a line cropped from a document."""
    parts = []
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.random()
        if kind < 0.55:
            word = str(rng.choice(_WORDS))
            parts.append(word.upper() if rng.random() < 0.15 else word)
        elif kind < 0.8:
            parts.append(str(int(rng.integers(0, 10 ** int(rng.integers(1, 7))))))
        elif kind < 0.9:
            parts.append(f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/"
                         f"{rng.integers(1990, 2030)}")
        else:
            parts.append(f"{rng.integers(0, 10000)}.{rng.integers(0, 100):02d}")
    return " ".join(parts)


def render_line(rng: np.random.Generator) -> np.ndarray:
    """One upright text line as an RGB uint8 image (H, W, 3): dark text on a light
    background, a tight crop with a small margin, as a text detector would cut it."""
    from PIL import Image, ImageDraw

    font = _font(int(rng.integers(len(_FONTS))), int(rng.integers(22, 41)))
    text = _text(rng)
    left, top, right, bottom = font.getbbox(text)
    margin_x, margin_y = (int(rng.integers(2, 10)) for _ in range(2))
    size = (right - left + 2 * margin_x, bottom - top + 2 * margin_y)
    background = tuple(int(v) for v in rng.integers(190, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 80, 3))
    image = Image.new("RGB", size, background)
    ImageDraw.Draw(image).text((margin_x - left, margin_y - top), text, font=font, fill=ink)
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0.0, float(rng.uniform(0, 8)), pixels.shape)  # sensor noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def preprocess(image: np.ndarray) -> np.ndarray:
    """PaddleOCR's classifier input: (3, 48, 192) float32, as its ``ClsResizeImg`` makes it."""
    from PIL import Image

    h, w = image.shape[:2]
    resized_w = min(WIDTH, math.ceil(HEIGHT * w / h))
    resized = Image.fromarray(image).resize((resized_w, HEIGHT), Image.BILINEAR)
    chw = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
    out = np.zeros((3, HEIGHT, WIDTH), dtype=np.float32)
    out[:, :, :resized_w] = (chw - 0.5) / 0.5
    return out


def make(samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, labels): ``samples`` preprocessed lines (N, 3, 48, 192) and int64 labels, half of
    them (at random) rotated by 180° (label 1)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(samples) % 2).astype(np.int64)
    x = np.empty((samples, 3, HEIGHT, WIDTH), dtype=np.float32)
    for i, label in enumerate(labels):
        line = render_line(rng)
        x[i] = preprocess(line[::-1, ::-1] if label else line)
    return x, labels


def train_val(train: int, val: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A training set and a held-out set (different seeds) as calibration data for the
    model imported at batch 1 (``--input-shape x=1x3x48x192``): ``{"x", "labels", "val_x",
    "val_labels"}``, samples (N, 1, 3, 48, 192), the layout the pruning passes read."""
    x, labels = make(train, seed=2 * seed)
    val_x, val_labels = make(val, seed=2 * seed + 1)
    return {INPUT: x[:, None], "labels": labels, f"val_{INPUT}": val_x[:, None],
            "val_labels": val_labels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the .npz to write")
    parser.add_argument("--samples", type=int, default=512, help="training lines")
    parser.add_argument("--val", type=int, default=0, help="held-out lines (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.val:
        arrays = train_val(args.samples, args.val, args.seed)
    else:
        x, labels = make(args.samples, args.seed)
        arrays = {INPUT: x, "labels": labels}
    np.savez(args.out, **arrays)
    print(f"{args.out}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
