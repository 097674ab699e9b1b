"""TVM's ConvertLayout, made safe for any valid module.

ConvertLayout asks each operator's layout-inference function how a layout flows through
it, and several of those abort on inputs they do not expect (reductions and ``stack`` over
3-D or 5-D tensors, ``split``'s tuple, ``dropout``), which ended real models (ResNet-50,
AlexNet, a Conv1d model) in internal errors. So, in order:

1. no convolution the layout callback wants changed: nothing to do (the layout serves
   the conv kernels only);
2. the plain pass, unless the module calls an operator in ``UNSAFE_OPS``;
3. the plain pass with every operator outside ``PROPAGATING_OPS`` hidden behind an opaque
   placeholder call: ConvertLayout gives operators it does not know their inputs back in
   the original layout, so the conversion stops at them; the operators are put back after;
4. the module unchanged (correct, just without the layout the default schedules prefer).

Which of these happened is reported to the caller, which records it in the artifact.
"""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.relax.transform import ConvertLayout

from hwcompile.rewrite import call_name, mutate_functions

LayoutCallback = Callable[[relax.Call], dict[str, list[str]]]

# Operators whose layout inference handles every layout a conv can hand them: elementwise
# maths, pooling, concat, resize — the neighbours of convolutions in CNNs.
PROPAGATING_OPS = frozenset(f"relax.{name}" for name in (
    "nn.conv2d", "nn.relu", "nn.gelu", "nn.gelu_tanh", "nn.silu", "nn.leakyrelu",
    "sigmoid", "tanh", "clip", "exp", "sqrt", "rsqrt", "negative", "abs", "astype",
    "add", "subtract", "multiply", "divide", "maximum", "minimum",
    "nn.max_pool2d", "nn.avg_pool2d", "nn.adaptive_avg_pool2d", "concat",
    "image.resize2d", "quantize", "dequantize"))

# Operators whose layout inference does worse than fail: ``stack`` of 0-d tensors (ONNX Min
# and Max of scalars) kills the process with a division by zero inside ConvertLayout. A
# module with any of them skips step 2.
UNSAFE_OPS = frozenset({"relax.stack"})

_PLACEHOLDER = "hwcompile.layout_opaque"


def _calls_any(mod: IRModule, ops: frozenset[str]) -> bool:
    found = False

    def visit(expr: relax.Expr) -> None:
        nonlocal found
        found = found or call_name(expr) in ops

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return found


def _wants_new_layout(mod: IRModule, layout_cb: LayoutCallback) -> bool:
    found = False

    def visit(expr: relax.Expr) -> None:
        nonlocal found
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and layout_cb(expr):
            wanted = layout_cb(expr).get(expr.op.name, [])
            found = found or (bool(wanted) and wanted[0] != expr.attrs.data_layout)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return found


@relax.expr_functor.mutator
class _Hide(relax.PyExprMutator):
    """Replaces calls to operators outside ``PROPAGATING_OPS`` by numbered placeholders."""

    def __init__(self, mod: IRModule, hidden: list[relax.Call]):
        super().__init__(mod)
        self.hidden = hidden

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        name = call_name(call)
        if name is None or name in PROPAGATING_OPS or name.startswith("relax.call_"):
            return call
        self.hidden.append(call)
        return relax.Call(tvm.ir.Op.get("relax.call_pure_packed"),
                          [relax.ExternFunc(f"{_PLACEHOLDER}.{len(self.hidden) - 1}"),
                           *call.args], None, [call.ty])


@relax.expr_functor.mutator
class _Restore(relax.PyExprMutator):
    def __init__(self, mod: IRModule, hidden: list[relax.Call]):
        super().__init__(mod)
        self.hidden = hidden

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        callee = call.args[0] if call_name(call) == "relax.call_pure_packed" else None
        if not (isinstance(callee, relax.ExternFunc) and callee.global_symbol.startswith(_PLACEHOLDER)):
            return call
        original = self.hidden[int(callee.global_symbol.rsplit(".", 1)[1])]
        return relax.Call(original.op, list(call.args[1:]), original.attrs, original.ty_args)


def _convert_propagating_only(mod: IRModule, convert: tvm.transform.Pass) -> IRModule:
    hidden: list[relax.Call] = []
    converted = convert(mutate_functions(_Hide(mod, hidden), mod))
    return mutate_functions(_Restore(converted, hidden), converted)


def guarded_convert_layout(layout_cb: LayoutCallback,
                           outcome: Callable[[str], None] = lambda _: None) -> tvm.transform.Pass:
    """ConvertLayout with ``layout_cb`` that never fails; ``outcome`` receives "none",
    "full", "partial" or "skipped" (steps 1-4 of the module docstring)."""
    convert = ConvertLayout({}, layout_cb=layout_cb)

    @tvm.transform.module_pass(opt_level=0, name="GuardedConvertLayout")
    def _pass(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        if not _wants_new_layout(mod, layout_cb):
            outcome("none")
            return mod
        attempts = [("full", convert), ("partial",
                                        lambda m: _convert_propagating_only(m, convert))]
        for label, attempt in attempts[_calls_any(mod, UNSAFE_OPS):]:
            try:
                converted = attempt(mod)
                outcome(label)
                return converted
            except RuntimeError:  # TVM's InternalError (a failed check) is one
                continue
        outcome("skipped")
        return mod

    return _pass
