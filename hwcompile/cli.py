"""The ``hwcompile`` command line (tvmc users should feel at home).

Every user error prints one ``error:`` line and exits non-zero; no TVM backtraces.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import HwcompileError


def cmd_compile(args: argparse.Namespace) -> int:
    from .driver import compile as compile_model
    from .frontend import parse_input_shapes, parse_input_values
    from .progress import say

    compile_model(args.model, target=args.target, output=args.output, passes=args.passes,
                  input_shapes=parse_input_shapes(args.input_shape or []),
                  input_values=parse_input_values(args.input_value or []),
                  calibration=args.calibration, dump_ir=args.dump_ir, progress=say,
                  emit=args.emit or (), emit_options=_emit_options(args), db=args.db)
    return 0


def _emit_options(args: argparse.Namespace) -> dict:
    """Options of --emit (only those given, so the emitters' defaults apply)."""
    return {key: value for key, value in (("name", args.c_name), ("weights", args.weights),
                                          ("checks", args.c_checks or None))
            if value is not None}


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .inputs import load_inputs
    from .runtime import load

    model = load(args.artifact)
    outputs = model.run(load_inputs(args.input, model.inputs))
    np.savez(args.output, **outputs)
    for name, value in outputs.items():
        print(f"{name}: shape {value.shape} {value.dtype} -> {args.output}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_artifact, format_stats
    from .tune.cli import rpc_device

    device = rpc_device(args)
    if device is not None:  # on a remote board through the RPC tracker
        from .artifact import read_metadata
        from .inputs import random_inputs
        from .model import TensorSpec
        from .tune.rpc import bench_remote

        specs = [TensorSpec.from_json(d) for d in read_metadata(Path(args.artifact))["inputs"]]
        remote = bench_remote(args.artifact, device, random_inputs(specs), repeat=args.repeat)
        print(f"{args.artifact} on {device.key} via {device.host}:{device.port}: median "
              f"{remote['median_ms']:.3f} ms  min {remote['min_ms']:.3f} ms ({args.repeat} runs)")
        return 0
    stats = bench_artifact(args.artifact, repeat=args.repeat, warmup=args.warmup,
                           threads=args.threads, input_path=args.input)
    print(format_stats(stats))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import format_report, verify

    report = verify(args.model, args.artifact, input_path=args.input, atol=args.atol,
                    rtol=args.rtol, seed=args.seed)
    print(format_report(report))
    return 0 if report["ok"] else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import inspect_path

    print(inspect_path(args.path, graph_out=args.graph,
                       input_shapes=args.input_shape or []))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    from .pipeline import registered_passes

    for name, info in registered_passes().items():
        options = ", ".join(
            f"{o.name}={o.default!r}" if o.default is not o.empty else o.name
            for o in info.options.values())
        print(f"{name}{f'({options})' if options else ''}")
        summary = " ".join(info.doc.split("\n\n")[0].split())
        if summary:
            print(f"    {summary}")
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from .target import registered_targets

    for name, factory in registered_targets().items():
        print(f"{name}: {(factory.__doc__ or '').strip().splitlines()[0] if factory.__doc__ else ''}")
    if args.tags:
        import tvm

        print("\nTVM tags:")
        for tag in sorted(tvm.target.list_tags()):
            print(f"  {tag}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .target import target_commands
    from .tune.cli import add_rpc_arguments
    from .tune.cli import register as register_tune

    parser = argparse.ArgumentParser(prog="hwcompile", description="Hardware-aware model compiler.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile an ONNX model for a target into an artifact")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--target", "-t", default="cpu", help="cpu, cpu:aarch64, JSON target or TVM tag")
    p.add_argument("--output", "-o", default="out", help="artifact directory to write")
    p.add_argument("--passes", help="pass spec, e.g. 'fold-constants,fold-batchnorm,dce'")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224",
                   help="fix a symbolic input shape (repeatable)")
    p.add_argument("--input-value", action="append", metavar="NAME=NUMBER",
                   help="fix a scalar input to a value; it is no longer an input (repeatable)")
    p.add_argument("--calibration", help="calibration data: .npz or a directory of them")
    p.add_argument("--dump-ir", metavar="DIR", help="write the Relax IR after each pass")
    p.add_argument("--emit", action="append", choices=["c-library", "c-standalone"],
                   help="also write a C library over the TVM runtime (c-library) or plain C99 "
                        "needing no runtime, for microcontrollers (c-standalone); see "
                        "examples/embed_c")
    p.add_argument("--c-name", help="C identifier prefix of the C API (default: the model name)")
    p.add_argument("--weights", choices=["embedded", "file"],
                   help="c-library weights: inside the library (default) or a separate file")
    p.add_argument("--c-checks", action="store_true",
                   help="c-standalone: keep the kernels' argument checks (larger code)")
    p.add_argument("--db", metavar="DIR", help="apply a tuning database (from hwcompile tune)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run an artifact on inputs from .npy/.npz")
    p.add_argument("artifact")
    p.add_argument("--input", "-i", help=".npz keyed by input name, or .npy for one input")
    p.add_argument("--output", "-o", default="outputs.npz")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="measure an artifact's latency")
    p.add_argument("artifact")
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, help="worker threads (default: all cores)")
    p.add_argument("--input", "-i", help="inputs (.npz/.npy); default: random, batch 1")
    add_rpc_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("verify", help="compare an artifact with onnxruntime on the same inputs")
    p.add_argument("model", help="the ONNX model the artifact was compiled from")
    p.add_argument("artifact")
    p.add_argument("--input", "-i", help="inputs (.npz/.npy); default: seeded random, batch 1")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("inspect", help="per-layer table of a model or an artifact")
    p.add_argument("path", help="ONNX model file or artifact directory")
    p.add_argument("--graph", metavar="OUT.svg|png|dot", help="draw the dataflow graph")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("passes", help="list the registered passes and their options")
    p.set_defaults(func=cmd_passes)
    p = sub.add_parser("targets", help="list the registered targets")
    p.add_argument("--tags", action="store_true", help="also list TVM's target tags")
    p.set_defaults(func=cmd_targets)
    for add_commands in target_commands():  # e.g. hwcompile vta
        add_commands(sub)
    register_tune(sub)
    from hwcompile.passes.prune.cli import register as register_prune

    register_prune(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's pool starts
    try:
        return args.func(args)
    except HwcompileError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a compiler bug, not a user error: still one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: internal error ({type(err).__name__}): {first}\n"
              "       set HWCOMPILE_DEBUG=1 for the traceback", file=sys.stderr)
        if os.environ.get("HWCOMPILE_DEBUG"):
            raise
        return 3


if __name__ == "__main__":
    sys.exit(main())
