"""A custom hwcompile pass, end to end.

``round-weights`` rounds every float weight to a shorter mantissa — bfloat16 keeps 7 bits —
so you can see what reduced-precision weights do to a model before committing to them.
It shows the three parts of a pass:

1. a function ``(model, ctx, *, options) -> Model`` registered under a short name;
2. keyword-only options with type hints and defaults: the spec parser converts
   ``round-weights(mantissa_bits=3)`` to ``int`` and rejects bad values;
3. facts for the report in ``ctx.details`` (they land in metadata.json's pipeline entry).

Use it from Python (import this module, then compile) or from the command line through
an entry point: a package that declares

    [project.entry-points."hwcompile.passes"]
    round-weights = "round_weights:round_weights"

makes ``hwcompile compile model.onnx --passes "fold-batchnorm,round-weights"`` find it.

Run this file to compile the digits example with it:

    .venv/bin/python examples/custom_pass/round_weights.py [MANTISSA_BITS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import hwcompile
from hwcompile.errors import PassError

FLOAT32_MANTISSA_BITS = 23


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 values to ``bits`` mantissa bits (round to nearest, ties to even)."""
    raw = values.astype(np.float32).view(np.uint32)
    drop = FLOAT32_MANTISSA_BITS - bits
    if drop == 0:
        return values.astype(np.float32)
    half = np.uint32(1 << (drop - 1))
    odd = (raw >> np.uint32(drop)) & np.uint32(1)
    rounded = (raw + half - np.uint32(1) + odd) & ~np.uint32((1 << drop) - 1)
    return rounded.view(np.float32)


@hwcompile.register_pass("round-weights")
def round_weights(model: hwcompile.Model, ctx: hwcompile.PassContext, *,
                  mantissa_bits: int = 7) -> hwcompile.Model:
    """Round float32 weights to a shorter mantissa (bfloat16: 7 bits)."""
    if not 0 <= mantissa_bits <= FLOAT32_MANTISSA_BITS:
        raise PassError(f"round-weights: mantissa_bits={mantissa_bits} must be in 0..23")
    params, worst = {}, 0.0
    for name, value in model.params.items():
        if value.dtype == np.float32:
            params[name] = round_mantissa(value, mantissa_bits)
            worst = max(worst, float(np.abs(params[name] - value).max(initial=0.0)))
        else:
            params[name] = value
    ctx.details["max_abs_change"] = worst
    return model.replace(params=params)


def main(argv: list[str]) -> int:
    from hwcompile.models.digits import ensure_digits_model, load_split

    bits = int(argv[0]) if argv else 7
    root = Path(__file__).resolve().parents[2]
    onnx_path = ensure_digits_model(root / "examples" / "digits" / "digits_cnn.onnx")
    out = hwcompile.compile(onnx_path, "cpu", root / "out" / "digits_rounded",
                            passes=f"fold-constants,fold-batchnorm,round-weights(mantissa_bits={bits})")
    _, _, x_test, y_test = load_split()
    accuracy = float(np.mean(hwcompile.load(out)(x_test).argmax(1) == y_test))
    print(f"digits CNN with {bits}-bit weight mantissas: held-out accuracy {accuracy:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
