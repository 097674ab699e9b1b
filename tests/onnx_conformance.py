"""ONNX import coverage on the test models shipped inside the onnx wheel.

Measured (TVM 0.27.0.post1, apache-tvm-ffi 0.1.14.post1, onnx 1.23, target "llvm",
2-core x86-64, ``python -m hwcompile.onnx_coverage --baseline``):

* plain ``from_onnx``:                 130 / 149 pass  (TVM_NOTES.md's earlier count: 128)
* hwcompile's frontend (``import_onnx``: ``legalize``, opset upgrade when needed, weights
  as parameters) + ``from_onnx``:  140 / 149 pass  (+10)
  newly passing: pytorch-converted/test_PReLU_{1d,2d,3d}_multiparam,
  pytorch-operator/test_operator_index, simple/test_expand_shape_model{1,2,3,4},
  simple/test_sequence_model3, simple/test_sequence_model6. No model regresses.
* time: ~105 s per mode on a quiet machine (~4.4 min for ``--baseline``, which runs both;
  ~250 s per mode while other jobs kept the load average at 6-8). Not the importer: the
  9 ``light`` models (full-size 224x224 ImageNet CNNs) take ~90% of it, mostly *running*
  their convolutions with TVM's untuned default CPU schedules (vgg19: ~1 s to build,
  ~25 s for one inference; densenet121: ~15 s build + ~15 s run). ``-mcpu=<host>`` did
  not help; only tuned schedules would. The other 140 models take ~12 s together.

Still failing with legalization (9), and why:

* simple/test_gradient_of_add, test_gradient_of_add_and_mul: ``Gradient`` (a training
  op, ai.onnx.preview.training) has no converter in the importer.
* simple/test_strnorm_model_* (6): ``StringNormalizer`` on string tensors; TVM has no
  string dtype.
* simple/test_sequence_model8: ``SplitToSequence`` whose split sizes are a run-time input
  (and the split dim symbolic); Relax ``split`` needs static split points.

Comparison follows onnx's backend test runner (``onnx.backend.test.runner.Runner
.assert_similar_outputs``): same number of outputs, equal shapes, equal dtypes, then
``np.testing.assert_allclose(out, ref, rtol, atol)``, i.e. ``|out - ref| <= atol + rtol *
|ref|`` elementwise, NaN matching NaN, with the loader's defaults rtol=1e-3, atol=1e-7
(``onnx.backend.test.loader.load_model_tests``; a case's ``data.json`` may override them,
none of the shipped model cases does). Inputs/outputs are the cases' ``test_data_set_*``
``.pb`` files fed positionally to the graph inputs that are not initializers (as the runner
does); the ``light`` models ship only expected outputs, and get the runner's dummy input
``arange(n).reshape(shape) / n`` (``Runner.generate_dummy_data(random=False)``).

Each model is imported with concrete ``shape_dict``/``dtype_dict`` taken from its first
data set, built once with ``tvm.compile(mod, "llvm")`` (default Relax pipeline) and run on
``relax.VirtualMachine`` for every data set. A failure reports its stage: load (a test
value that is not a plain tensor), import, build, run, or compare (with the max
abs error).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

#: The model groups measured, under ``onnx/backend/test/data/``.
KINDS = ("pytorch-converted", "pytorch-operator", "simple", "light")

#: onnx's backend test loader defaults (``onnx.backend.test.loader.load_model_tests``);
#: a case's ``data.json`` may override them (none of the shipped model cases does).
DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-7


def data_dir() -> str:
    """The ``onnx/backend/test/data`` directory of the installed onnx wheel."""
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


@dataclass
class ModelCase:
    """One test model: its ONNX file and its test data sets (files, loaded lazily)."""

    name: str
    kind: str
    model_path: str
    #: each data set: (input .pb paths in order, expected output .pb paths in order)
    data_sets: list[tuple[list[str], list[str]]]
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    #: light models have no input files: the onnx runner feeds ``arange(n)/n`` dummies
    dummy_inputs: bool = False

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class CaseResult:
    """Outcome of one model: ``status`` is "pass" or "fail"; a failure names its stage."""

    name: str
    kind: str
    status: str
    stage: str = ""  # "", "load", "import", "build", "run", "compare"
    reason: str = ""
    max_abs_err: float | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


def discover_cases(root: str | None = None, kinds: Sequence[str] = KINDS) -> list[ModelCase]:
    """Enumerate the model test cases, as onnx's backend test loader/runner does."""
    import json

    root = root or data_dir()
    cases: list[ModelCase] = []
    for kind in kinds:
        kind_dir = os.path.join(root, kind)
        if not os.path.isdir(kind_dir):
            continue
        if kind == "light":
            # light_<name>.onnx + light_<name>_output_<i>.pb, inputs generated by the runner
            for path in sorted(glob.glob(os.path.join(kind_dir, "light_*.onnx"))):
                prefix = os.path.splitext(path)[0]
                outs = sorted(
                    glob.glob(prefix + "_output_*.pb"),
                    key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]),
                )
                cases.append(
                    ModelCase(
                        name=os.path.basename(prefix),
                        kind=kind,
                        model_path=path,
                        data_sets=[([], outs)],
                        dummy_inputs=True,
                    )
                )
            continue
        for name in sorted(os.listdir(kind_dir)):
            case_dir = os.path.join(kind_dir, name)
            model_path = os.path.join(case_dir, "model.onnx")
            if not os.path.isfile(model_path):
                continue
            rtol, atol = DEFAULT_RTOL, DEFAULT_ATOL
            if os.path.exists(os.path.join(case_dir, "data.json")):
                with open(os.path.join(case_dir, "data.json")) as f:
                    meta = json.load(f)
                rtol = meta.get("rtol", rtol)
                atol = meta.get("atol", atol)
            data_sets = []
            for ds in sorted(glob.glob(os.path.join(case_dir, "test_data_set_*"))):
                n_in = len(glob.glob(os.path.join(ds, "input_*.pb")))
                n_out = len(glob.glob(os.path.join(ds, "output_*.pb")))
                data_sets.append(
                    (
                        [os.path.join(ds, f"input_{i}.pb") for i in range(n_in)],
                        [os.path.join(ds, f"output_{i}.pb") for i in range(n_out)],
                    )
                )
            cases.append(ModelCase(name, kind, model_path, data_sets, rtol, atol))
    return cases


class Unsupported(Exception):
    """A test input/output the harness cannot express as a plain tensor."""


def _load_value(path: str, type_proto: onnx.TypeProto | None) -> np.ndarray:
    """Load a .pb test value; only plain tensors are supported (as TVM only feeds tensors)."""
    with open(path, "rb") as f:
        data = f.read()
    which = type_proto.WhichOneof("value") if type_proto is not None else "tensor_type"
    if which != "tensor_type":
        raise Unsupported(f"{os.path.basename(path)} is a {which} value, not a tensor")
    tensor = onnx.TensorProto()
    tensor.ParseFromString(data)
    return numpy_helper.to_array(tensor)


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _dummy_input(vi: onnx.ValueInfoProto) -> np.ndarray:
    """The runner's ``generate_dummy_data(random=False)``: ``arange(n).reshape(shape)/n``."""
    shape = tuple(
        d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim
    )
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def load_data_sets(
    case: ModelCase, model: onnx.ModelProto
) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Load every data set of ``case`` as (inputs, expected outputs) numpy lists."""
    inputs_vi = _graph_inputs(model)
    out_types = [o.type for o in model.graph.output]
    sets = []
    for in_paths, out_paths in case.data_sets:
        if case.dummy_inputs:
            inputs = [_dummy_input(vi) for vi in inputs_vi]
        else:
            inputs = [
                _load_value(p, inputs_vi[i].type if i < len(inputs_vi) else None)
                for i, p in enumerate(in_paths)
            ]
        outputs = [
            _load_value(p, out_types[i] if i < len(out_types) else None)
            for i, p in enumerate(out_paths)
        ]
        sets.append((inputs, outputs))
    return sets


def _flatten_outputs(value) -> list[np.ndarray]:
    import tvm

    if isinstance(value, tvm.runtime.Tensor):
        return [value.numpy()]
    if hasattr(value, "__len__"):  # tuple outputs (tvm Array / Python sequence)
        flat: list[np.ndarray] = []
        for v in value:
            flat.extend(_flatten_outputs(v))
        return flat
    if isinstance(value, (int, float, bool, np.generic)):
        return [np.asarray(value)]
    raise TypeError(f"unexpected VM output type {type(value).__name__}")


def compare_outputs(
    expected: Sequence[np.ndarray], actual: Sequence[np.ndarray], rtol: float, atol: float
) -> tuple[bool, str, float | None]:
    """The onnx runner's ``assert_similar_outputs`` check, returning (ok, reason, max_err)."""
    if len(actual) != len(expected):
        return False, f"{len(actual)} outputs, expected {len(expected)}", None
    worst: float | None = None
    for i, (ref, out) in enumerate(zip(expected, actual)):
        out = np.asarray(out)
        if out.shape != ref.shape:
            return False, f"output {i} shape {out.shape}, expected {ref.shape}", None
        if ref.dtype == object:
            if not np.array_equal(out, ref):
                return False, f"output {i} strings differ", None
            continue
        if out.dtype != ref.dtype:
            return False, f"output {i} dtype {out.dtype}, expected {ref.dtype}", None
        if ref.size == 0:
            continue
        o = out.astype(np.float64)
        r = ref.astype(np.float64)
        with np.errstate(invalid="ignore"):
            err = np.abs(o - r)
        nan_ok = np.isnan(o) == np.isnan(r)
        if not nan_ok.all():
            return False, f"output {i} NaN pattern differs", float("nan")
        err = np.where(np.isnan(r), 0.0, err)
        # inf == inf counts as equal (as np.testing.assert_allclose)
        both_inf = np.isinf(o) & np.isinf(r) & (np.sign(o) == np.sign(r))
        err = np.where(both_inf, 0.0, err)
        max_err = float(err.max())
        worst = max_err if worst is None else max(worst, max_err)
        bad = err > atol + rtol * np.abs(np.where(both_inf, 0.0, r))
        if bad.any():
            return (
                False,
                (
                    f"output {i} mismatch: {int(bad.sum())}/{ref.size} elements, "
                    f"max abs err {max_err:.3g} (rtol={rtol:g}, atol={atol:g})"
                ),
                max_err,
            )
    return True, "", worst


def _one_line(exc: BaseException, limit: int = 160) -> str:
    msg = str(exc).strip().splitlines()
    # TVM errors carry a backtrace; keep the last meaningful line
    lines = [ln.strip() for ln in msg if ln.strip()]
    text = lines[-1] if lines else ""
    for ln in lines:
        if "Error" in ln or "error" in ln or "Check failed" in ln:
            text = ln
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_case(
    case: ModelCase,
    hwcompile_frontend: bool = True,
    target: str = "llvm",
    relax_pipeline: str = "default",
) -> CaseResult:
    """Import, build, run and compare one test model; never raises."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    t0 = time.perf_counter()

    def fail(stage: str, reason: str, max_err: float | None = None) -> CaseResult:
        return CaseResult(
            case.name, case.kind, "fail", stage, reason, max_err, time.perf_counter() - t0
        )

    try:
        model = onnx.load(case.model_path)
        data_sets = load_data_sets(case, model)
    except Unsupported as exc:
        return fail("load", f"unsupported test value: {exc}")
    except Exception as exc:
        return fail("load", _one_line(exc))
    inputs_vi = _graph_inputs(model)
    first_inputs = data_sets[0][0] if data_sets else []
    shape_dict = {vi.name: list(a.shape) for vi, a in zip(inputs_vi, first_inputs)}
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if hwcompile_frontend:  # hwcompile's own frontend: legalization, upgrades, weights as params
                from hwcompile.frontend import import_onnx

                shapes = {k: tuple(v) for k, v in shape_dict.items()}
                mod = import_onnx(model, input_shapes=shapes).bound_module()
            else:
                # string inputs (object arrays) keep the model's declared type: TVM decides
                dtype_dict = {vi.name: str(a.dtype) for vi, a in zip(inputs_vi, first_inputs)
                              if a.dtype != object}
                mod = from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict)
    except Exception as exc:
        return fail("import", _one_line(exc))
    try:
        ex = tvm.compile(mod, target, relax_pipeline=relax_pipeline)
        vm = relax.VirtualMachine(ex, tvm.cpu())
    except Exception as exc:
        return fail("build", _one_line(exc))
    worst: float | None = None
    for k, (inputs, expected) in enumerate(data_sets):
        try:
            args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs]
            out = _flatten_outputs(vm["main"](*args))
        except Exception as exc:
            return fail("run", _one_line(exc))
        ok, reason, err = compare_outputs(expected, out, case.rtol, case.atol)
        if err is not None:
            worst = err if worst is None else max(worst, err)
        if not ok:
            return fail("compare", f"data set {k}: {reason}", err)
    return CaseResult(
        case.name, case.kind, "pass", "", "", worst, time.perf_counter() - t0
    )


def run_coverage(
    hwcompile_frontend: bool = True,
    cases: Sequence[ModelCase] | None = None,
    relax_pipeline: str = "default",
    progress: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Run every case; returns one result per case in discovery order."""
    cases = discover_cases() if cases is None else cases
    results = []
    for case in cases:
        try:
            res = run_case(case, hwcompile_frontend=hwcompile_frontend, relax_pipeline=relax_pipeline)
        except Exception as exc:  # should not happen
            res = CaseResult(case.name, case.kind, "fail", "harness", _one_line(exc))
            traceback.print_exc()
        results.append(res)
        if progress:
            progress(res)
    return results


def format_table(results: Sequence[CaseResult]) -> str:
    width = max((len(r.key) for r in results), default=10)
    lines = [f"{'model':<{width}}  status  time(s)  reason"]
    for r in results:
        reason = f"[{r.stage}] {r.reason}" if r.stage else ""
        lines.append(f"{r.key:<{width}}  {r.status:<6}  {r.seconds:7.2f}  {reason}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hwcompile.onnx_coverage",
        description="Import, build and run the onnx wheel's test models with TVM.",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run plain from_onnx (no legalization) and report the gain",
    )
    parser.add_argument("-k", dest="filter", default=None, help="only models containing this")
    parser.add_argument("--pipeline", default="default", help="relax pipeline for tvm.compile")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each result live")
    args = parser.parse_args(argv)

    cases = discover_cases()
    if args.filter:
        cases = [c for c in cases if args.filter in c.key]

    def show(r: CaseResult) -> None:
        if args.verbose:
            print(f"{r.key}: {r.status} {r.seconds:.2f}s {r.reason}", file=sys.stderr, flush=True)

    modes = [("hwcompile", True)] + ([("baseline", False)] if args.baseline else [])
    summary = []
    for label, leg in modes:
        t0 = time.perf_counter()
        results = run_coverage(hwcompile_frontend=leg, cases=cases, relax_pipeline=args.pipeline,
                               progress=show)
        elapsed = time.perf_counter() - t0
        print(f"== {label} ({'hwcompile frontend' if leg else 'plain from_onnx'}) ==")
        print(format_table(results))
        n_pass = sum(r.passed for r in results)
        print(f"{label}: {n_pass}/{len(results)} pass in {elapsed:.1f}s\n")
        summary.append((label, results, n_pass, elapsed))
    if len(summary) == 2:
        (_, hw, n_hw, _), (_, base, n_base, _) = summary
        gained = [h.key for h, b in zip(hw, base) if h.passed and not b.passed]
        lost = [h.key for h, b in zip(hw, base) if b.passed and not h.passed]
        print(f"gain: {n_hw} vs {n_base} (+{n_hw - n_base})")
        print("  newly passing: " + (", ".join(gained) or "none"))
        if lost:
            print("  REGRESSED: " + ", ".join(lost))
    for label, _, n_pass, elapsed in summary:
        print(f"TOTAL {label}: {n_pass}/{len(cases)} ({elapsed:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
