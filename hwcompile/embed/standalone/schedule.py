"""The graph-level schedule, read from the memory-planned Relax ``main``.

After ``StaticPlanBlockMemory`` (see lower.py) ``main`` is a straight sequence of
``alloc_storage`` (bytes), ``alloc_tensor`` (storage, offset, shape, dtype), direct kernel
calls in destination-passing style, ``reshape`` views and ``builtin.alloc_tensor`` for the
outputs. That sequence becomes data: tensors (where each lives: an arena block, a caller's
input or output buffer, or a weight), kernel steps over them, and the copies for outputs
that are not written in place (an output that is an input, a weight or another output).
Anything else in ``main`` needs the TVM runtime and is refused, naming it.

Each allocated tensor (with its views) is an arena block of its own size. Relax gives
tensors whose lifetimes do not overlap one storage, sized for the largest and alive from
the first to the last of them; packing the tensors instead (arena.py) lets a small tensor
late in the graph reuse what an early large one held. The storages are kept for the
record (``storages``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from hwcompile.errors import TargetError

ARENA, INPUT, OUTPUT, WEIGHT = "arena", "input", "output", "weight"


@dataclass(frozen=True)
class Tensor:
    where: str                 # ARENA, INPUT, OUTPUT or WEIGHT
    index: int                 # arena block, input/output position, or weight number
    offset: int                # bytes into the arena block (0 elsewhere)
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Step:
    kernel: str
    args: tuple[int, ...]      # tensor numbers, in the kernel's parameter order


@dataclass(frozen=True)
class Copy:
    output: int                # the output buffer written
    source: int                # tensor number copied from


@dataclass
class Schedule:
    tensors: list[Tensor] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)        # bytes of each arena block
    storages: list[int] = field(default_factory=list)      # bytes of Relax's planned storages
    weights: list[np.ndarray] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)

    @property
    def kernels(self) -> list[str]:
        """The kernels called, each once, in order of first call."""
        return list(dict.fromkeys(step.kernel for step in self.steps))


def _ints(expr: relax.Expr, what: str) -> tuple[int, ...]:
    values = expr.values if isinstance(expr, relax.ShapeExpr) else None
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        raise TargetError(f"c-standalone: {what} {expr} is not static; fix every input shape "
                          "with --input-shape")
    return tuple(int(v) for v in values)


def _int(expr: object, what: str) -> int:
    if not isinstance(expr, tvm.tirx.IntImm):
        raise TargetError(f"c-standalone: {what} {expr} is not a constant")
    return int(expr)


def _tensor_type(var: relax.Expr, what: str) -> tuple[tuple[int, ...], str]:
    ty = var.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise TargetError(f"c-standalone: {what} is not a tensor of known shape")
    return _ints(ty.shape, what), str(ty.dtype)


class _Reader:
    """Walks main's bindings once, in order, building a Schedule."""

    def __init__(self, main: relax.Function, num_inputs: int):
        self.schedule = Schedule()
        self.values: dict[relax.Var, object] = {}   # var -> tensor number, or ("storage", bytes)
        self.tuples: dict[relax.Var, relax.Tuple] = {}
        self.builtin_blocks: set[int] = set()       # blocks from builtin.alloc_tensor
        self.constants: list[tuple[tvm.ir.GenericConst, int]] = []
        if len(main.params) != num_inputs:
            raise TargetError(f"c-standalone: main takes {len(main.params)} parameters, the "
                              f"model {num_inputs} inputs; bind every weight as a constant")
        for i, param in enumerate(main.params):
            self.values[param] = self._add(Tensor(INPUT, i, 0, *_tensor_type(param, f"input {i}")))

    def _add(self, tensor: Tensor) -> int:
        self.schedule.tensors.append(tensor)
        return len(self.schedule.tensors) - 1

    def _block(self, nbytes: int) -> int:
        self.schedule.blocks.append(nbytes)
        return len(self.schedule.blocks) - 1

    def tensor(self, expr: relax.Expr, where: str) -> int:
        """The tensor number of a kernel argument or output."""
        if isinstance(expr, tvm.ir.GenericConst) and hasattr(expr.value, "numpy"):
            for const, number in self.constants:
                if const.same_as(expr):
                    return number
            array = np.ascontiguousarray(expr.value.numpy())
            self.schedule.weights.append(array)
            number = self._add(Tensor(WEIGHT, len(self.schedule.weights) - 1, 0,
                                      tuple(array.shape), str(array.dtype)))
            self.constants.append((expr, number))
            return number
        value = self.values.get(expr) if isinstance(expr, relax.Var) else None
        if not isinstance(value, int):
            raise TargetError(f"c-standalone: {where} takes {type(expr).__name__} "
                              f"'{str(expr)[:60]}', not a tensor; only static tensor arguments "
                              "are supported (fix every input shape with --input-shape)")
        return value

    def binding(self, var: relax.Var, value: relax.Expr) -> None:
        if isinstance(value, relax.Var):
            self.values[var] = self.values[value]
            return
        if isinstance(value, relax.Tuple):
            self.tuples[var] = value
            return
        if isinstance(value, relax.TupleGetItem) and value.tuple_value in self.tuples:
            self.binding(var, self.tuples[value.tuple_value].fields[value.index])
            return
        if not isinstance(value, relax.Call):
            raise TargetError(f"c-standalone: main computes {type(value).__name__} "
                              f"'{str(value)[:60]}', which needs the TVM runtime")
        if isinstance(value.op, relax.GlobalVar):
            name = value.op.name_hint
            args = tuple(self.tensor(a, f"kernel '{name}'") for a in value.args)
            self.schedule.steps.append(Step(name, args))
            return
        op = value.op.name if isinstance(value.op, tvm.ir.Op) else str(value.op)
        if op == "relax.memory.alloc_storage":
            (nbytes,) = _ints(value.args[0], "storage size")
            self.schedule.storages.append(nbytes)
            self.values[var] = ("storage", nbytes)
        elif op == "relax.memory.alloc_tensor":
            _, storage_bytes = self.values[value.args[0]]
            shape, dtype = _ints(value.args[2], "tensor shape"), str(value.args[3].value)
            tensor = Tensor(ARENA, 0, 0, shape, dtype)
            if _int(value.args[1], "tensor offset") + tensor.nbytes > storage_bytes:
                raise TargetError(f"c-standalone: tensor '{var.name}' overruns its storage")
            self.values[var] = self._add(Tensor(ARENA, self._block(tensor.nbytes), 0, shape,
                                                dtype))
        elif op == "relax.builtin.alloc_tensor":
            shape, dtype = _tensor_type(var, f"tensor '{var.name}'")
            block = self._block(Tensor(ARENA, 0, 0, shape, dtype).nbytes)
            self.builtin_blocks.add(block)
            self.values[var] = self._add(Tensor(ARENA, block, 0, shape, dtype))
        elif op == "relax.reshape":
            base = self.schedule.tensors[self.tensor(value.args[0], "reshape")]
            shape, dtype = _tensor_type(var, f"reshape '{var.name}'")
            self.values[var] = self._add(Tensor(base.where, base.index, base.offset, shape, dtype))
        else:
            callee = ""
            if value.args and isinstance(value.args[0], relax.ExternFunc):
                callee = f" ('{value.args[0].global_symbol}')"
            raise TargetError(f"c-standalone: main calls '{op}'{callee}, which needs the TVM "
                              "runtime; use --emit c-library for this model")

    def outputs(self, body: relax.Expr, num_outputs: int) -> None:
        body = self.tuples.get(body, body) if isinstance(body, relax.Var) else body
        results = list(body.fields) if isinstance(body, relax.Tuple) else [body]
        if len(results) != num_outputs:
            raise TargetError(f"c-standalone: main returns {len(results)} values, the model "
                              f"has {num_outputs} outputs")
        taken: set[int] = set()
        for i, result in enumerate(results):
            number = self.tensor(result, f"output {i}")
            tensor = self.schedule.tensors[number]
            if tensor.where == ARENA and tensor.index in self.builtin_blocks \
                    and tensor.index not in taken:
                # Written in place: every view of this block lives in the caller's buffer.
                taken.add(tensor.index)
                self.schedule.tensors = [
                    Tensor(OUTPUT, i, 0, t.shape, t.dtype)
                    if t.where == ARENA and t.index == tensor.index else t
                    for t in self.schedule.tensors]
            else:
                self.schedule.copies.append(Copy(i, number))


def read_schedule(main: relax.Function, num_inputs: int, num_outputs: int) -> Schedule:
    """The Schedule of a planned ``main`` (see lower.lower)."""
    reader = _Reader(main, num_inputs)
    body = main.body
    for block in body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                raise TargetError("c-standalone: main has a match_cast binding (a shape checked "
                                  "at run time); fix every input shape with --input-shape")
            reader.binding(binding.var, binding.value)
    reader.outputs(body.body, num_outputs)
    return reader.schedule
