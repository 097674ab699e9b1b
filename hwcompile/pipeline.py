"""The pass registry, pass spec strings, and the pipeline runner with its per-pass report.

A pass is a function ``fn(model, ctx, **options) -> Model`` registered under a short name;
its keyword-only parameters, with their type hints and defaults, are its options. A
function may instead return a ``tvm.transform.Pass``, which is applied to the Relax module.
Third-party packages add passes through the ``hwcompile.passes`` entry-point group.
"""

from __future__ import annotations

import inspect
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import tvm

from .errors import PassError
from .model import Model


@dataclass
class PassContext:
    """What passes may read besides the model: the target's constraints, data, progress."""

    constraints: Any = None  # hwcompile.target.Constraints of the target being compiled for
    calibration: Any = None  # calibration/training samples, when given
    progress: Callable[[str], None] = lambda message: None
    # A pass may put pass-specific facts here (e.g. what it pruned); the runner moves them
    # into that pass's report entry and clears it for the next pass.
    details: dict[str, Any] = field(default_factory=dict)
    # The model before the first structural change (set by prune), the teacher for distillation.
    teacher: Any = None
    # The hwcompile.target.Target being compiled for (set by compile(); None when a pipeline
    # runs on its own), for passes that build and measure, e.g. prune(measure=true).
    target: Any = None


@dataclass(frozen=True)
class PassInfo:
    name: str
    fn: Callable[..., Any]
    doc: str
    options: dict[str, inspect.Parameter]


_REGISTRY: dict[str, PassInfo] = {}
_loaded = False


def register_pass(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register_pass("my-pass")`` on ``def f(model, ctx, *, opt: int = 1)``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = list(inspect.signature(fn).parameters.values())
        options = {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        doc = inspect.getdoc(fn) or ""
        _REGISTRY[name] = PassInfo(name, fn, doc, options)
        return fn

    return decorate


def _load_plugins() -> None:
    """Import the built-in passes and every ``hwcompile.passes`` entry point, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import hwcompile.passes  # noqa: F401  (registers the built-in passes)

    for entry in metadata.entry_points(group="hwcompile.passes"):
        loaded = entry.load()
        if callable(loaded) and entry.name not in _REGISTRY:
            register_pass(entry.name)(loaded)


def registered_passes() -> dict[str, PassInfo]:
    _load_plugins()
    return dict(sorted(_REGISTRY.items()))


def get_pass(name: str) -> PassInfo:
    passes = registered_passes()
    if name not in passes:
        raise PassError(f"unknown pass '{name}'; available: {', '.join(passes)}")
    return passes[name]


# ---- spec strings: "fold-constants,prune(ratio=0.3, ignore=[conv1, conv2])" -------------------

def _split_top_level(text: str, sep: str = ",") -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
            if depth < 0:
                raise PassError(f"pass spec '{text}': unbalanced ')' or ']'")
        if char == sep and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise PassError(f"pass spec '{text}': unbalanced '(' or '['")
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _convert(pass_name: str, option: inspect.Parameter, raw: str) -> Any:
    """Parse ``raw`` to the option's annotated type, with a clear error naming both."""
    hint = option.annotation
    if isinstance(hint, str):
        hint = eval(hint, vars(typing) | {"Path": Path})  # annotations are postponed strings
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        if raw.lower() == "none" and len(non_none) < len(args):
            return None
        hint, origin, args = non_none[0], typing.get_origin(non_none[0]), typing.get_args(non_none[0])
    where = f"pass '{pass_name}' option '{option.name}'"
    if origin is typing.Literal:
        if raw not in [str(a) for a in args]:
            raise PassError(f"{where}: '{raw}' is not one of {', '.join(map(str, args))}")
        return next(a for a in args if str(a) == raw)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        inner = raw.strip()
        if not (inner.startswith("[") and inner.endswith("]")):
            inner = f"[{inner}]"
        items = _split_top_level(inner[1:-1])
        return [i.strip().strip("'\"") for i in items]
    try:
        if hint is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if hint in (int, float):
            return hint(raw)
    except ValueError:
        raise PassError(f"{where}: '{raw}' is not a valid {hint.__name__}") from None
    return raw.strip("'\"")


@dataclass(frozen=True)
class PassCall:
    """One parsed entry of a pass spec: a pass name and its converted options."""

    name: str
    options: dict[str, Any]

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.options.items())})"


def parse_spec(spec: str | Sequence[str]) -> list[PassCall]:
    """Parse ``"a,b(x=1, y=[p, q])"`` (or a list of such entries) into checked PassCalls."""
    entries = _split_top_level(spec) if isinstance(spec, str) else [
        e for s in spec for e in _split_top_level(s)]
    calls = []
    for entry in entries:
        name, _, rest = entry.partition("(")
        name = name.strip()
        info = get_pass(name)
        options: dict[str, Any] = {}
        if rest:
            if not rest.rstrip().endswith(")"):
                raise PassError(f"pass spec '{entry}': missing ')'")
            for item in _split_top_level(rest.rstrip()[:-1]):
                key, eq, raw = item.partition("=")
                key = key.strip().replace("-", "_")
                if not eq:
                    raise PassError(f"pass '{name}': option '{item}' must be written key=value")
                if key not in info.options:
                    known = ", ".join(info.options) or "none"
                    raise PassError(f"pass '{name}' has no option '{key}' (options: {known})")
                options[key] = _convert(name, info.options[key], raw.strip())
        calls.append(PassCall(name, options))
    return calls


# ---- running ------------------------------------------------------------------------------

def model_figures(model: Model) -> dict[str, int]:
    from .graph import total_macs

    return {"params": model.num_params, "weight_bytes": model.weight_bytes, "macs": total_macs(model)}


def _apply(info: PassInfo, model: Model, ctx: PassContext, options: dict[str, Any]) -> Model:
    try:
        result = info.fn(model, ctx, **options)
    except PassError:
        raise
    except (ValueError, TypeError) as err:
        raise PassError(f"pass '{info.name}': {err}") from err
    if isinstance(result, tvm.transform.Pass):
        mod = result(model.mod)
        kept = {v.name for v in mod["main"].params[len(model.inputs):]}
        result = model.replace(mod=mod, params={k: v for k, v in model.params.items() if k in kept})
    if not isinstance(result, Model):
        raise PassError(f"pass '{info.name}' returned {type(result).__name__}, not a Model")
    return result


def run_pipeline(
    model: Model,
    calls: Sequence[PassCall],
    ctx: PassContext | None = None,
    dump_ir: str | Path | None = None,
) -> tuple[Model, list[dict[str, Any]]]:
    """Apply each pass in order; return the result and a report entry per pass."""
    ctx = ctx or PassContext()
    report = []
    dump_dir = Path(dump_ir) if dump_ir else None
    if dump_dir:
        dump_dir.mkdir(parents=True, exist_ok=True)
        (dump_dir / "00-input.py").write_text(model.mod.script(show_meta=False))
    before = model_figures(model)
    for index, call in enumerate(calls, start=1):
        ctx.progress(f"pass {index}/{len(calls)}: {call}")
        start = time.perf_counter()
        model = _apply(get_pass(call.name), model, ctx, call.options)
        seconds = time.perf_counter() - start
        after = model_figures(model)
        entry = {"pass": call.name, "options": call.options, "seconds": round(seconds, 4),
                 "before": before, "after": after}
        if ctx.details:
            entry["details"], ctx.details = ctx.details, {}
        report.append(entry)
        before = after
        if dump_dir:
            (dump_dir / f"{index:02d}-{call.name}.py").write_text(model.mod.script(show_meta=False))
    return model, report
