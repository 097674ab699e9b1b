"""Targets: what a named target publishes to passes, and how a spec string finds one.

A target turns a Model into built files. The ``Target`` class below is the whole contract
between the core and a target. A target publishes ``Constraints`` that passes read (they
never ask which target they compile for). Targets register under a name with
``@register_target("name")``; third-party packages add them through the
``hwcompile.targets`` entry-point group. A spec is ``name`` or ``name:argument``
(``cpu``, ``cpu:aarch64``), a JSON TVM target (``{"kind": "llvm", ...}``) or a TVM tag.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import TargetError
from .model import Model


@dataclass(frozen=True)
class QuantScheme:
    """The integer arithmetic a target executes (read by the quantization passes)."""

    weight_granularity: str = "per-channel"  # or "per-tensor"
    activation_symmetric: bool = False  # False: affine (zero point) activations
    power_of_two_scales: bool = False  # True where requantization is shift-only


@dataclass(frozen=True)
class Constraints:
    """Facts about a target that passes use to rewrite the model for it."""

    channel_multiple: int = 1  # channel counts that are multiples of this run best
    quant_scheme: QuantScheme = field(default_factory=QuantScheme)
    offload_ops: tuple[str, ...] = ()  # Relax ops an accelerator executes itself

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BuildResult:
    """Files a target wrote into the artifact's staging directory, and how to load them."""

    library: str  # file name of the loadable (or linkable) library
    loadable: bool  # False for a cross-compiled object archive
    extra: dict[str, Any] = field(default_factory=dict)  # target-specific metadata
    # Weights left out of the library and passed on every call (see sparse_weights.py).
    runtime_weights: dict[str, Any] = field(default_factory=dict)


class Target:
    """The target contract: everything the core asks of a target is here, so a new target
    is one package (a ``Target`` subclass and a ``@register_target`` factory) plus, outside
    this repository, an entry point in the ``hwcompile.targets`` group.

    Every target provides
      ``name``, ``device``  its registry name; the TVM device kind its library runs on;
      ``constraints``       what passes may read (``Constraints``);
      ``build(model, out_dir) -> BuildResult``  its files in the artifact's staging
                            directory; tunable targets also take ``db=`` (a tuning database);
      ``describe()``        what metadata.json records about it (extend the base's dict);
      ``runtime_hook``      ``"module:function"`` the runtime calls as ``fn(art_dir, metadata)``
                            before loading the library, for libraries that call back into
                            Python (an accelerator driver); None for plain libraries.
    A target TVM compiles kernels for can be tuned (``hwcompile tune``, ``compile --db``); it
    provides
      ``tvm_target``        the ``tvm.target.Target`` kernels are built for (None: not tunable);
      ``relax_pipeline(db)``  the Relax pipeline ``build`` compiles with (the C-library
                            emitter lowers with it too);
      ``tunable_module(mod)``  the fused, legalized module tuning tasks are cut from: the
                            kernels ``relax_pipeline`` builds, so database records apply;
      ``tensor_intrinsics``  the ``tvm.s_tir.tensor_intrin`` family its schedules may use;
    and where it has heuristic default schedules
      ``default_schedule(kernel)``  the traced default schedule of a kernel (an IRModule with
                            ``main``), recorded as the tuner's baseline; None: none;
      ``keeps_default(kernel)``  True for kernels tuning must leave to the default schedule
                            (its search space cannot express what the default does).
    Target-specific commands (``hwcompile vta ...``) register with ``@register_commands``.
    """

    name = "target"
    device = "cpu"
    constraints = Constraints()
    runtime_hook: str | None = None
    tvm_target: Any = None
    tensor_intrinsics: str | None = None

    def describe(self) -> dict[str, Any]:
        info = {"name": self.name, "device": self.device, "constraints": self.constraints.to_json()}
        if self.runtime_hook:
            info["runtime_hook"] = self.runtime_hook
        return info

    def build(self, model: Model, out_dir: Path) -> BuildResult:
        raise NotImplementedError

    def relax_pipeline(self, db: str | Path | None = None) -> Any:
        raise NotImplementedError

    def tunable_module(self, mod: Any) -> Any:
        raise NotImplementedError

    def default_schedule(self, kernel: Any) -> Any | None:
        return None

    def keeps_default(self, kernel: Any) -> bool:
        return False


TargetFactory = Callable[[str | None], Target]
_TARGETS: dict[str, TargetFactory] = {}
_loaded = False


def register_target(name: str) -> Callable[[TargetFactory], TargetFactory]:
    """Decorator: ``@register_target("cpu")`` on ``factory(argument: str | None) -> Target``."""

    def decorate(factory: TargetFactory) -> TargetFactory:
        _TARGETS[name] = factory
        return factory

    return decorate


CommandsAdder = Callable[[Any], Any]
_COMMANDS: list[CommandsAdder] = []


def register_commands(add: CommandsAdder) -> CommandsAdder:
    """Decorator on a target's ``add(subparsers)`` that adds its own ``hwcompile`` commands."""
    _COMMANDS.append(add)
    return add


def target_commands() -> list[CommandsAdder]:
    """The registered targets' command adders (loading the targets first)."""
    registered_targets()
    return list(_COMMANDS)


def registered_targets() -> dict[str, TargetFactory]:
    global _loaded
    if not _loaded:
        _loaded = True
        import hwcompile.targets  # noqa: F401  (registers the built-in targets)

        for entry in metadata.entry_points(group="hwcompile.targets"):
            loaded = entry.load()
            if callable(loaded) and entry.name not in _TARGETS:
                register_target(entry.name)(loaded)
    return dict(sorted(_TARGETS.items()))


def resolve_target(spec: str) -> Target:
    """A Target for ``spec`` (see module docstring), or a TargetError listing the options."""
    targets = registered_targets()
    spec = spec.strip()
    if spec.startswith("{"):
        try:
            config = json.loads(spec)
        except json.JSONDecodeError as err:
            raise TargetError(f"target '{spec}': invalid JSON ({err.msg})") from None
        kind = config.get("kind") if isinstance(config, dict) else None
        factory = targets.get({"llvm": "cpu"}.get(kind, kind))
        if factory is None:
            raise TargetError(f"target JSON kind '{kind}' is not supported; use kind 'llvm'")
        return factory(spec)
    name, _, argument = spec.partition(":")
    if name in targets:
        return targets[name](argument or None)
    if name == "llvm" and "cpu" in targets:
        return targets["cpu"](argument or None)
    import tvm

    if spec in tvm.target.list_tags():
        kind = tvm.target.Target(spec).kind.name
        factory = targets.get({"llvm": "cpu"}.get(kind, kind))
        if factory is not None:
            return factory(spec)
        raise TargetError(f"target tag '{spec}' is of kind '{kind}', which hwcompile does not build for")
    raise TargetError(f"unknown target '{spec}'; available: {', '.join(targets)}, "
                      "a JSON TVM target, or a TVM tag (hwcompile targets --tags)")
