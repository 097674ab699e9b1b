"""Recurrent cells (LSTM, GRU, RNN) expanded into plain ONNX ops over a static length.

TVM's importer has no converter for ``LSTM``/``GRU``/``RNN``. With the sequence length
fixed (``--input-shape``), each node becomes its cell written out once per time step:
one ``MatMul`` projecting the whole input sequence, then per step a ``MatMul`` with the
recurrence weights, ``Split`` into gates, the activations, ``Mul``/``Add``, and ``Concat``
of the step outputs; ONNX semantics throughout (``onnx/defs/rnn/defs.cc``):

* directions forward, reverse and bidirectional; ``layout`` 0 and 1;
* optional ``B``, ``initial_h``/``initial_c`` (zeros when absent), LSTM peepholes ``P``,
  ``clip``, LSTM ``input_forget``, GRU ``linear_before_reset``, the ``activations`` list
  with ``activation_alpha``/``activation_beta``;
* ``sequence_lens``: a batch entry past its length keeps its state and outputs zeros
  (``Where`` on a per-step mask), so a reverse direction starts at the entry's last valid
  step; an entry of length 0 ends with zero states.

Where the spec is loose, onnxruntime's CPU kernels decide (measured): the zero-length
rule above, and ``clip`` bounds the inputs of f and g but not the cell state LSTM's h
reads. onnxruntime has no ``layout=1`` kernels; that layout is the ``layout=0`` graph
between transposes, as the spec defines it.

Constant weights are transposed (and biases summed) here into new named weights, so the
Relax passes see ordinary ``MatMul`` weights.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..errors import UnsupportedOpError
from .graph import Emitter, Info, add_initializer, attr, is_default, remove_unused, rewrite_nodes

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                        "RNN": ["Tanh"]}
#: activation -> (alpha default, beta default); None = the function takes no such value
_ACTIVATIONS = {
    "Sigmoid": (None, None), "Tanh": (None, None), "Relu": (None, None),
    "Softsign": (None, None), "Softplus": (None, None),
    "LeakyRelu": (0.01, None), "ThresholdedRelu": (1.0, None), "Elu": (1.0, None),
    "HardSigmoid": (0.2, 0.5), "Affine": (1.0, 0.0), "ScaledTanh": (1.0, 1.0),
}


class _Cell:
    """One recurrent node's attributes and the emitter its expansion writes to."""

    def __init__(self, node: onnx.NodeProto, info: Info, model: onnx.ModelProto):
        self.node, self.info, self.model = node, info, model
        self.kind = node.op_type
        self.name = node.name or self.kind
        self.em = Emitter(info, node.name or self.kind.lower())
        ins = list(node.input) + [""] * (8 - len(node.input))
        self.x, self.w, self.r, self.b, self.lens, self.h0 = ins[:6]
        self.c0, self.p = (ins[6], ins[7]) if self.kind == "LSTM" else ("", "")
        self.layout = int(attr(node, "layout", 0))
        direction = attr(node, "direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        self.reverse = {"forward": [False], "reverse": [True],
                        "bidirectional": [False, True]}.get(direction)
        if self.reverse is None:
            self.refuse(f"direction '{direction}' is not one of forward, reverse, bidirectional")
        self.clip = attr(node, "clip")
        elem = info.elem_types.get(self.x, onnx.TensorProto.FLOAT)
        self.dtype = helper.tensor_dtype_to_np_dtype(elem)
        self.gates = _GATES[self.kind]
        self.hidden = attr(node, "hidden_size")
        if self.hidden is None:
            r_shape = info.shapes.get(self.r)
            if r_shape is None or r_shape[-1] is None:
                self.refuse("hidden_size is not given and R's shape is unknown")
            self.hidden = int(r_shape[-1])
        self.activations = self._activations()

    def refuse(self, why: str):
        raise UnsupportedOpError(f"{self.kind} node '{self.name}': {why}")

    def _activations(self) -> list[tuple[str, float | None, float | None]]:
        per_direction = len(_DEFAULT_ACTIVATIONS[self.kind])
        names = [a.decode() if isinstance(a, bytes) else a
                 for a in attr(self.node, "activations", [])]
        if not names:
            names = _DEFAULT_ACTIVATIONS[self.kind] * len(self.reverse)
        elif len(names) == per_direction and len(self.reverse) == 2:
            names = names * 2
        if len(names) != per_direction * len(self.reverse):
            self.refuse(f"expected {per_direction * len(self.reverse)} activations, "
                        f"got {len(names)}")
        alphas = list(attr(self.node, "activation_alpha", []))
        betas = list(attr(self.node, "activation_beta", []))
        resolved = []
        for name in names:
            canonical = {k.lower(): k for k in _ACTIVATIONS}.get(name.lower())
            if canonical is None:
                self.refuse(f"activation '{name}' is not supported")
            alpha, beta = _ACTIVATIONS[canonical]
            if alpha is not None and alphas:
                alpha = alphas.pop(0)
            if beta is not None and betas:
                beta = betas.pop(0)
            resolved.append((canonical, alpha, beta))
        return resolved

    # ------------------------------------------------------------------ emission helpers

    def scalar(self, value: float) -> str:
        return self.em.const(np.array(value, dtype=self.dtype), "scalar")

    def activate(self, x: str, which: int, direction: int) -> str:
        """Activation ``which`` (f, g, h order) of a direction, after the clip."""
        em = self.em
        # onnxruntime clips the gates' pre-activations but not the cell state LSTM's h reads
        if self.clip is not None and not (self.kind == "LSTM" and which == 2):
            x = (em.op("Clip", [x, self.scalar(-self.clip), self.scalar(self.clip)])
                 if self.info.opset >= 11 else em.op("Clip", [x], min=-self.clip, max=self.clip))
        per_direction = len(_DEFAULT_ACTIVATIONS[self.kind])
        name, alpha, beta = self.activations[direction * per_direction + which]
        if name == "Affine":
            return em.op("Add", [em.op("Mul", [x, self.scalar(alpha)]), self.scalar(beta)])
        if name == "ScaledTanh":
            inner = em.op("Tanh", [em.op("Mul", [x, self.scalar(beta)])])
            return em.op("Mul", [inner, self.scalar(alpha)])
        attrs = {}
        if alpha is not None:
            attrs["alpha"] = float(alpha)
        if beta is not None:
            attrs["beta"] = float(beta)
        return em.op(name, [x], **attrs)

    def weight_columns(self, name: str, d: int, groups: list[list[int]]) -> list[str]:
        """``W[d]``/``R[d]`` transposed to ``[in, gates*hidden]``, one matrix per group of
        gates; constants are transposed here into new weights."""
        h = self.hidden
        if name in self.info.consts:
            value = np.asarray(self.info.consts[name])[d]
            return [add_initializer(self.model, self.info, f"{name}_d{d}_T",
                                    np.concatenate([value[g * h:(g + 1) * h] for g in group]).T
                                    .copy()) for group in groups]
        per_gate = self.em.split(self.em.take(name, d, 0), self.gates, 0)
        out = []
        for group in groups:
            rows = [per_gate[g] for g in group]
            block = rows[0] if len(rows) == 1 else self.em.op("Concat", rows, axis=0)
            out.append(self.em.op("Transpose", [block], perm=[1, 0]))
        return out

    def biases(self, d: int, inner: list[int]) -> tuple[str | None, list[str]]:
        """(bias added to the input projection, per-gate recurrence biases that must stay
        separate: ``inner`` lists those gates, e.g. GRU's h with linear_before_reset)."""
        h, g = self.hidden, self.gates
        if not self.b:
            return None, [self.scalar(0.0) for _ in inner]
        if self.b in self.info.consts:
            value = np.asarray(self.info.consts[self.b])[d].astype(self.dtype)
            wb, rb = value[:g * h].copy(), value[g * h:].copy()
            kept = [self.em.const(rb[k * h:(k + 1) * h], "rbias") for k in inner]
            for k in inner:
                rb[k * h:(k + 1) * h] = 0
            return add_initializer(self.model, self.info, f"{self.b}_d{d}_sum", wb + rb), kept
        wb, rb = self.em.split(self.em.take(self.b, d, 0), 2, 0)
        if not inner:
            return self.em.op("Add", [wb, rb]), []
        pieces = self.em.split(rb, g, 0)
        zeros = self.em.const(np.zeros(h, self.dtype), "zeros")
        outer = self.em.op("Concat", [zeros if k in inner else p for k, p in enumerate(pieces)],
                           axis=0)
        return self.em.op("Add", [wb, outer]), [pieces[k] for k in inner]

    def initial(self, name: str, d: int) -> str:
        if not name:
            return self.em.const(np.zeros((1, self.hidden), self.dtype), "zeros")
        return self.em.take(name, d, 0 if self.layout == 0 else 1)

    # ------------------------------------------------------------------ cells

    def lstm_step(self, xt, h, c, rt, peep, d):
        em = self.em
        gates = em.op("Add", [xt, em.op("MatMul", [h, rt[0]])])
        i, o, f, cand = em.split(gates, 4, 1)
        if peep is not None:
            i = em.op("Add", [i, em.op("Mul", [peep[0], c])])
            f = em.op("Add", [f, em.op("Mul", [peep[2], c])])
        i = self.activate(i, 0, d)
        if int(attr(self.node, "input_forget", 0)):
            f = em.op("Sub", [self.scalar(1.0), i])
        else:
            f = self.activate(f, 0, d)
        c_new = em.op("Add", [em.op("Mul", [f, c]), em.op("Mul", [i, self.activate(cand, 1, d)])])
        if peep is not None:
            o = em.op("Add", [o, em.op("Mul", [peep[1], c_new])])
        o = self.activate(o, 0, d)
        return em.op("Mul", [o, self.activate(c_new, 2, d)]), c_new

    def gru_step(self, xt, h, rt, rbh, d):
        em = self.em
        xz, xr, xh = em.split(xt, 3, 1)
        if int(attr(self.node, "linear_before_reset", 0)):
            hz, hr, hh = em.split(em.op("MatMul", [h, rt[0]]), 3, 1)
            z = self.activate(em.op("Add", [xz, hz]), 0, d)
            r = self.activate(em.op("Add", [xr, hr]), 0, d)
            hh = em.op("Mul", [r, em.op("Add", [hh, rbh])])
        else:
            hz, hr = em.split(em.op("MatMul", [h, rt[0]]), 2, 1)
            z = self.activate(em.op("Add", [xz, hz]), 0, d)
            r = self.activate(em.op("Add", [xr, hr]), 0, d)
            hh = em.op("MatMul", [em.op("Mul", [r, h]), rt[1]])
        cand = self.activate(em.op("Add", [xh, hh]), 1, d)
        # (1 - z) * cand + z * h
        keep = em.op("Mul", [em.op("Sub", [self.scalar(1.0), z]), cand])
        return em.op("Add", [keep, em.op("Mul", [z, h])])

    def rnn_step(self, xt, h, rt, d):
        return self.activate(self.em.op("Add", [xt, self.em.op("MatMul", [h, rt[0]])]), 0, d)

    # ------------------------------------------------------------------ whole node

    def expand(self) -> list[onnx.NodeProto]:
        em, kind, h = self.em, self.kind, self.hidden
        x_shape = self.info.shapes.get(self.x)
        seq_axis = 0 if self.layout == 0 else 1
        if x_shape is not None and len(x_shape) != 3:
            self.refuse(f"its input '{self.x}' has {len(x_shape)} dims; {kind} takes 3")
        if x_shape is None or x_shape[seq_axis] is None:
            self.refuse(f"its sequence length (dim {seq_axis} of '{self.x}') is not fixed; "
                        "give the model's inputs fixed shapes with --input-shape")
        steps = int(x_shape[seq_axis])
        x = self.x if self.layout == 0 else em.op("Transpose", [self.x], perm=[1, 0, 2])
        masks = self.masks(steps)
        lbr = kind == "GRU" and int(attr(self.node, "linear_before_reset", 0))
        w_groups = [list(range(self.gates))]
        r_groups = [[0, 1], [2]] if kind == "GRU" and not lbr else w_groups
        ys, yhs, ycs = [], [], []
        for d, reverse in enumerate(self.reverse):
            (wt,) = self.weight_columns(self.w, d, w_groups)
            rt = self.weight_columns(self.r, d, r_groups)
            bias, inner = self.biases(d, [2] if lbr else [])
            xw = em.op("MatMul", [x, wt])
            if bias is not None:
                xw = em.op("Add", [xw, bias])
            peep = None
            if self.p:
                peep = (em.split(em.take(self.p, d, 0), 3, 0) if self.p not in self.info.consts
                        else [em.const(np.asarray(self.info.consts[self.p])[d][k * h:(k + 1) * h]
                                       .astype(self.dtype), "peephole") for k in range(3)])
            state = self.initial(self.h0, d)
            cell = self.initial(self.c0, d) if kind == "LSTM" else None
            outputs: list[str] = [""] * steps
            for t in (reversed(range(steps)) if reverse else range(steps)):
                xt = em.take(xw, t, 0)
                if kind == "LSTM":
                    new, new_cell = self.lstm_step(xt, state, cell, rt, peep, d)
                elif kind == "GRU":
                    new, new_cell = self.gru_step(xt, state, rt, inner[0] if lbr else None, d), None
                else:
                    new, new_cell = self.rnn_step(xt, state, rt, d), None
                if masks:
                    outputs[t] = em.op("Where", [masks[t], new, self.zeros_like_state()])
                    state = em.op("Where", [masks[t], new, state])
                    if cell is not None:
                        cell = em.op("Where", [masks[t], new_cell, cell])
                else:
                    outputs[t], state, cell = new, new, new_cell
            if self.wanted(0):
                ys.append(em.op("Concat", [em.unsqueeze(y, [0, 1]) for y in outputs], axis=0)
                          if steps > 1 else em.unsqueeze(outputs[0], [0, 1]))
            if masks:  # an entry of length 0 ends with zero states (onnxruntime)
                state = em.op("Where", [masks[0], state, self.zeros_like_state()])
                if cell is not None:
                    cell = em.op("Where", [masks[0], cell, self.zeros_like_state()])
            yhs.append(em.unsqueeze(state, [0]))
            if cell is not None:
                ycs.append(em.unsqueeze(cell, [0]))
        self.emit_output(0, ys, 1, [2, 0, 1, 3])
        self.emit_output(1, yhs, 0, [1, 0, 2])
        self.emit_output(2, ycs, 0, [1, 0, 2])
        return em.nodes

    def masks(self, steps: int) -> list[str]:
        """Per step, ``[batch, 1]`` booleans: entry still within its sequence_lens."""
        if not self.lens:
            return []
        lens = self.info.consts.get(self.lens)
        if lens is not None and np.all(np.asarray(lens) >= steps):
            return []
        dtype = helper.tensor_dtype_to_np_dtype(
            self.info.elem_types.get(self.lens, onnx.TensorProto.INT32))
        return [self.em.unsqueeze(self.em.op("Less", [self.em.const(np.array(t, dtype), "step"),
                                                      self.lens]), [1])
                for t in range(steps)]

    def zeros_like_state(self) -> str:
        return self.em.const(np.zeros((1, self.hidden), self.dtype), "zeros")

    def wanted(self, index: int) -> bool:
        return len(self.node.output) > index and bool(self.node.output[index])

    def emit_output(self, index: int, pieces: list[str], axis: int, layout1_perm: list[int]):
        if not self.wanted(index):
            return
        value = pieces[0] if len(pieces) == 1 else self.em.op("Concat", pieces, axis=axis)
        if self.layout == 1:
            value = self.em.op("Transpose", [value], perm=layout1_perm)
        self.em.op("Identity", [value], [self.node.output[index]])


def expand_recurrent(model: onnx.ModelProto) -> int:
    """Expand every LSTM/GRU/RNN node, also inside the branches of an If decided at run
    time; refuse (UnsupportedOpError) one that cannot be."""
    count = rewrite_nodes(model, lambda n: n.op_type in _GATES and is_default(n),
                          lambda node, info: _Cell(node, info, model).expand())
    if count:
        remove_unused(model)
    return count
