"""``hwcompile inspect``: per-layer table (op, shape, params, MACs) of a model or artifact."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _table(layers: list[dict], title: str) -> str:
    rows = [("#", "var", "op", "output shape", "weights", "params", "MACs")]
    for i, layer in enumerate(layers):
        rows.append((str(i), layer["var"], layer["op"], "x".join(map(str, layer["shape"])),
                     ",".join(layer["weights"]), f"{layer['params']:,}", f"{layer['macs']:,}"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = [title]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.rjust(w) if c >= 5 else cell.ljust(w)
                               for c, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    params = sum(layer["params"] for layer in layers)
    macs = sum(layer["macs"] for layer in layers)
    lines.append(f"total: {len(layers)} ops, {params:,} params, {macs:,} MACs per sample")
    return "\n".join(lines)


def _io(specs: list[dict], kind: str) -> list[str]:
    return [f"{kind} {s['name']}: {'x'.join(map(str, s['shape']))} {s['dtype']}" for s in specs]


def inspect_path(path: str | Path, graph_out: str | None = None,
                 input_shapes: Sequence[str] = ()) -> str:
    import dataclasses

    from . import graph
    from .artifact import read_metadata
    from .frontend import import_onnx, parse_input_shapes

    path = Path(path)
    if path.is_dir():
        meta = read_metadata(path)
        target = meta["target"].get("spec", meta["target"]["name"])
        lines = [(f"artifact {path}: model {meta['model'].get('name')}, target {target}, "
                  f"hwcompile {meta['versions']['hwcompile']}, TVM {meta['versions']['tvm']}")]
        lines += _io(meta["inputs"], "input") + _io(meta["outputs"], "output")
        lines.append("pipeline: " + (", ".join(p["pass"] for p in meta["pipeline"]) or "(none)"))
        lines.append("memory: " + ", ".join(f"{k} {v:,}" for k, v in meta["memory"].items()))
        lines.append(_table(meta.get("layers", []), "layers:"))
        if graph_out:
            graph.render_dot((path / "graph.dot").read_text(), graph_out)
        return "\n".join(lines)
    model = import_onnx(path, input_shapes=parse_input_shapes(input_shapes))
    layers = [dataclasses.asdict(layer) for layer in graph.layers(model)]
    lines = [f"model {path}",
             *_io([s.to_json() for s in model.inputs], "input"),
             *_io([s.to_json() for s in model.outputs], "output")]
    lines.append(f"weights: {model.num_params:,} params, {model.weight_bytes:,} bytes")
    lines.append(_table(layers, "layers:"))
    if graph_out:
        graph.draw(model, graph_out)
    return "\n".join(lines)
