"""The compiler driver: ONNX → Model → passes → target build → artifact."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import onnx

from . import artifact, graph
from .frontend import import_onnx
from .model import Model
from .pipeline import PassContext, model_figures, parse_spec, run_pipeline
from .progress import BuildProgress
from .target import Target, resolve_target

DEFAULT_PASSES = "fold-constants,fold-batchnorm,dce"


def compile(  # mirrors the CLI verb, as tvm.compile does
    model: str | Path | onnx.ModelProto | Model,
    target: str | Target = "cpu",
    output: str | Path = "out",
    passes: str | Sequence[str] | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    input_values: Mapping[str, float] | None = None,
    calibration: Any = None,
    dump_ir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    emit: Sequence[str] = (),
    emit_options: Mapping[str, Any] | None = None,
    db: str | Path | None = None,
) -> Path:
    """Compile a model for a target into the artifact directory ``output``; return its path.

    ``passes`` is a spec string (``"fold-constants,prune(ratio=0.3)"``); None applies the
    default folding pipeline and ``""`` applies none. ``emit`` adds embedding outputs
    (``["c-library"]``, options such as ``{"name": "digits", "weights": "file"}``; see
    hwcompile.embed).
    """
    say = progress or (lambda message: None)
    target = resolve_target(target) if isinstance(target, str) else target
    calls = parse_spec(DEFAULT_PASSES if passes is None else passes)
    if isinstance(model, Model):
        source = model
    else:
        say(f"importing {model if not isinstance(model, onnx.ModelProto) else 'ONNX model'}")
        source = import_onnx(model, input_shapes=input_shapes, input_values=input_values)
    ctx = PassContext(constraints=target.constraints, calibration=calibration, progress=say,
                      target=target)
    optimized, report = run_pipeline(source, calls, ctx, dump_ir=dump_ir)
    say(f"building for {target.name}")
    with artifact.staging(output) as stage:
        # ``db``: a tuning database (hwcompile tune) whose schedules the target applies.
        with BuildProgress(say, f"building for {target.name}") if progress else nullcontext():
            built = target.build(optimized, stage, db=db) if db else target.build(optimized, stage)
        (stage / "graph.dot").write_text(graph.to_dot(optimized))
        library_bytes = (stage / built.library).stat().st_size
        io_bytes = sum(s.nbytes for s in optimized.inputs + optimized.outputs)  # per sample
        embedded: dict[str, Any] = {"embed": {}, "memory": {}}
        if emit:
            from .embed import emit as emit_embedding

            say(f"emitting {', '.join(emit)}")
            embedded = emit_embedding(emit, optimized, target, stage,
                                      {**(emit_options or {}), **({"db": db} if db else {})})
        artifact.write_metadata(stage, {
            "model": {"name": optimized.name, **optimized.annotations},
            "target": target.describe(),
            "library": built.library,
            "loadable": built.loadable,
            "target_extra": built.extra,
            "runtime_weights": built.runtime_weights,
            "inputs": [s.to_json() for s in optimized.inputs],
            "outputs": [s.to_json() for s in optimized.outputs],
            "pipeline": report,
            "figures": {"source": model_figures(source), "compiled": model_figures(optimized)},
            "memory": {"weight_bytes": optimized.weight_bytes, "io_bytes": io_bytes,
                       "library_bytes": library_bytes, **embedded["memory"]},
            "embed": embedded["embed"],
            "layers": [dataclasses.asdict(layer) for layer in graph.layers(optimized)],
        })
    say(f"wrote {output}")
    return Path(output)
