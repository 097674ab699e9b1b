"""``hwcompile prune-sensitivity MODEL.onnx --data DATA.npz``: the sensitivity table and plot."""

from __future__ import annotations

import argparse


def cmd_prune_sensitivity(args: argparse.Namespace) -> int:
    from hwcompile.errors import InputError
    from hwcompile.frontend import import_onnx, parse_input_shapes
    from hwcompile.progress import say

    from . import data
    from .sensitivity import sensitivity

    try:
        ratios = [float(r) for r in args.ratios.split(",")]
    except ValueError:
        raise InputError(f"--ratios '{args.ratios}': expected comma-separated numbers, "
                         "e.g. 0.1,0.3,0.5") from None
    model = import_onnx(args.model, input_shapes=parse_input_shapes(args.input_shape or []))
    x, labels = data.load(args.data, model, "prune-sensitivity")
    result = sensitivity(model, x[:args.samples], None if labels is None else labels[:args.samples],
                         ratios, args.criterion, progress=say)
    print(result.table())
    if args.plot:
        print(f"plot: {result.plot(args.plot)}")
    return 0


def register(sub) -> None:
    """Add the ``prune-sensitivity`` command to the hwcompile CLI's subparsers."""
    p = sub.add_parser("prune-sensitivity",
                       help="accuracy (or output error) vs pruning ratio, per prunable layer group")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--data", required=True,
                   help=".npz with the input (samples stacked) and optionally 'labels'")
    p.add_argument("--ratios", default="0.1,0.3,0.5,0.7", help="comma-separated ratios in [0, 1)")
    p.add_argument("--criterion", default="l2", choices=["magnitude", "l1", "l2"])
    p.add_argument("--samples", type=int, default=512, help="evaluate on the first N samples")
    p.add_argument("--plot", metavar="OUT.png", help="also draw the curves (needs matplotlib)")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224")
    p.set_defaults(func=cmd_prune_sensitivity)
