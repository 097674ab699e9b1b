"""ONNX file → ``Model``: validate, upgrade, fix symbolic shapes, import into Relax."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import numpy_helper, shape_inference

from .errors import InputError, ModelLoadError, UnsupportedOpError
from .model import Dim, Model, TensorSpec, shape_of
from .onnx_rewrite.graph import subgraphs

# Many of the importer's converters start at opset 13; older models are upgraded to it when
# a node would otherwise be converted with a newer opset's semantics.
MIN_OPSET = 13
_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}


def parse_input_shapes(specs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["input=1x3x224x224"]`` → ``{"input": (1, 3, 224, 224)}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise InputError(
                f"bad --input-shape '{spec}': expected NAME=D1xD2x... with positive sizes, "
                "e.g. input=1x3x224x224"
            )
        shapes[name] = shape
    return shapes


def parse_input_values(specs: Sequence[str]) -> dict[str, float]:
    """``["sr=16000"]`` → ``{"sr": 16000.0}`` (scalar inputs fixed to a value)."""
    values: dict[str, float] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        try:
            values[name] = float(text)
        except ValueError:
            name = ""
        if not sep or not name:
            raise InputError(f"bad --input-value '{spec}': expected NAME=NUMBER, e.g. sr=16000")
    return values


def _fix_input_values(proto: onnx.ModelProto, values: Mapping[str, float], source: str) -> None:
    """Scalar inputs become constants of the given value: what depends on them only (an
    ``If`` on a sample rate) then folds away, as with fixed shapes."""
    inputs = {vi.name: vi for vi in _graph_inputs(proto)}
    for name, value in values.items():
        vi = inputs.get(name)
        if vi is None:
            raise InputError(f"{source}: --input-value names '{name}', but the model's inputs "
                             f"are {', '.join(inputs)}")
        tensor = vi.type.tensor_type
        if len(tensor.shape.dim) != 0 or tensor.elem_type not in _ONNX_DTYPES:
            raise InputError(f"{source}: --input-value {name}: only scalar numeric inputs can "
                             f"be fixed to a value (its shape is {_value_spec(vi).shape})")
        array = np.array(value, dtype=_ONNX_DTYPES[tensor.elem_type])
        proto.graph.input.remove(vi)
        proto.graph.initializer.append(numpy_helper.from_array(array, name))


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file; every failure names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file")
    try:
        proto = onnx.load_model(str(path), load_external_data=True)
    except Exception as err:  # protobuf raises several unrelated types
        raise ModelLoadError(f"{path}: not a readable ONNX model ({_first_line(err)})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"{path}: not an ONNX model (the file parses to an empty graph)")
    return proto


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _default_opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return MIN_OPSET


def _supported_ops() -> set[str]:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    return set(_get_convert_map()) | {"Constant", "If"}


def check_supported(proto: onnx.ModelProto, source: str) -> None:
    """Raise one error listing every operator (with its nodes) the importer lacks."""
    supported = _supported_ops()
    missing: dict[str, list[str]] = {}

    def visit(graph: onnx.GraphProto, where: str) -> None:
        for index, node in enumerate(graph.node):
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            if node.domain not in ("", "ai.onnx") or op not in supported:
                missing.setdefault(op, []).append(node.name or f"{where}#{index}")
            for sub in subgraphs(node):  # branches of an If decided at run time
                visit(sub, f"{node.name or node.op_type}/")

    visit(proto.graph, "")
    if missing:
        listing = "; ".join(f"{op} (nodes: {', '.join(names[:5])}"
                            f"{', …' if len(names) > 5 else ''})" for op, names in missing.items())
        raise UnsupportedOpError(f"{source}: unsupported operators: {listing}")


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in proto.graph.initializer}
    return [vi for vi in proto.graph.input if vi.name not in initializers]


def _value_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = vi.type.tensor_type
    dims: list[Dim] = []
    for i, d in enumerate(tensor_type.shape.dim):
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{vi.name}_d{i}"))
    dtype = _ONNX_DTYPES.get(tensor_type.elem_type, onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower())
    return TensorSpec(vi.name, tuple(dims), dtype)


def _drop_initializer_inputs(proto: onnx.ModelProto) -> None:
    """Old exporters list every initializer as a graph input too; the importer would then
    make two parameters of one weight. Since IR version 4 they need not be listed."""
    initializers = {init.name for init in proto.graph.initializer}
    if not any(vi.name in initializers for vi in proto.graph.input):
        return
    kept = [vi for vi in proto.graph.input if vi.name not in initializers]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    proto.ir_version = max(proto.ir_version, 4)


def _symbolic_dims(proto: onnx.ModelProto) -> None:
    """Exporters write an unknown dim as -1 (paddle2onnx), 0 or a dim without a name; each
    becomes a named symbolic dim on the inputs (unique: unnamed dims are independent) and an
    unknown one elsewhere, as ONNX means them. (TVM's importer would read -1 as a size.)"""
    taken = {d.dim_param for vi in proto.graph.input
             for d in vi.type.tensor_type.shape.dim if d.dim_param}
    for vi in _graph_inputs(proto):
        for i, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.dim_param or (dim.HasField("dim_value") and dim.dim_value > 0):
                continue
            name, k = f"{vi.name}_d{i}", 1
            while name in taken:
                name, k = f"{vi.name}_d{i}_{k}", k + 1
            taken.add(name)
            dim.Clear()
            dim.dim_param = name
    for vi in list(proto.graph.output) + list(proto.graph.value_info):
        for dim in vi.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value < 1:
                dim.Clear()


def _fix_input_shapes(proto: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    inputs = {vi.name: vi for vi in _graph_inputs(proto)}
    for name, shape in shapes.items():
        if name not in inputs:
            raise InputError(f"{source}: --input-shape names '{name}', but the model's inputs are "
                             f"{', '.join(inputs)}")
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise InputError(f"{source}: --input-shape {name} has {len(shape)} dims, "
                             f"the model's input has {len(dims)}")
        for dim, size in zip(dims, shape):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise InputError(f"{source}: --input-shape {name}={'x'.join(map(str, shape))} "
                                 f"contradicts the model's fixed shape {_value_spec(inputs[name]).shape}")
            dim.Clear()
            dim.dim_value = size


def _symbolic_hint(inputs: list[TensorSpec]) -> str:
    """What may help when the importer fails on a model with symbolic input dims: shape
    computations only fold once the inputs are fixed."""
    symbolic = [f"{s.name}={'x'.join(map(str, s.shape))}" for s in inputs
                if any(not isinstance(d, int) for d in s.shape)]
    if not symbolic:
        return ""
    return (f" (the inputs have symbolic dims: {', '.join(symbolic)}; fixing them with "
            "--input-shape lets hwcompile compute the model's shape arithmetic at compile time)")


def _needs_upgrade(proto: onnx.ModelProto) -> bool:
    """True when the importer has no converter version at or below the model's opset for
    some node: it would then silently apply a newer opset's semantics to that node."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    opset, converters = _default_opset(proto), _get_convert_map()
    for node in proto.graph.node:
        converter = converters.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        versions = [int(a[len("_impl_v"):]) for a in dir(converter) if a.startswith("_impl_v")]
        if versions and min(versions) > opset:
            return True
    return False


def _upgrade_opset(proto: onnx.ModelProto, source: str) -> tuple[onnx.ModelProto, int | None]:
    """(model, original opset) upgraded to MIN_OPSET when needed; unchanged otherwise."""
    opset = _default_opset(proto)
    if opset >= MIN_OPSET or not _needs_upgrade(proto):
        return proto, None
    try:
        return onnx.version_converter.convert_version(proto, MIN_OPSET), opset
    except Exception as err:
        raise ModelLoadError(f"{source}: opset {opset} needs an upgrade to {MIN_OPSET} for the "
                             f"importer, and ONNX's converter failed: {_first_line(err)}") from None


def _unique_weight_names(names: list[str], source: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ModelLoadError(f"{source}: two weights are both named '{name}'; rename one")
        seen.add(name)


def _structural_initializers_to_constants(proto: onnx.ModelProto) -> None:
    """Integer initializers are shapes, axes, indices and positions, not weights: make them
    Constant nodes so the importer folds them as it must (it requires e.g. constant
    Reshape shapes and sequence positions), while float initializers stay named weights."""
    structural = [init for init in proto.graph.initializer
                  if init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                            onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)]
    if not structural:
        return
    constants = [onnx.helper.make_node("Constant", [], [init.name], value=init,
                                       name=f"{init.name}_constant") for init in structural]
    names = {init.name for init in structural}
    kept = [init for init in proto.graph.initializer if init.name not in names]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(constants + nodes)


def import_onnx(
    model: str | Path | onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    name: str | None = None,
    input_values: Mapping[str, float] | None = None,
) -> Model:
    """Import an ONNX model (file or proto) into a ``Model``.

    Symbolic dimensions stay symbolic unless ``input_shapes`` fixes them; ``input_values``
    turns scalar inputs into constants (see ``_fix_input_values``).
    """
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from .clip_ops import clip_as_min_max
    from .onnx_rewrite import prepare
    from .onnx_rewrite.importer_gaps import legalize

    if isinstance(model, onnx.ModelProto):
        proto, source = onnx.ModelProto(), name or model.graph.name or "model"
        proto.CopyFrom(model)
    else:
        proto, source = load_onnx(model), str(model)
        name = name or Path(model).stem
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise ModelLoadError(f"{source}: invalid ONNX model: {_first_line(err)}") from None
    _drop_initializer_inputs(proto)
    _symbolic_dims(proto)
    _fix_input_shapes(proto, input_shapes or {}, source)
    _fix_input_values(proto, input_values or {}, source)
    # The rewrites know each opset's semantics, so they run on the model's own opset.
    proto = legalize(prepare(proto, source), input_shapes=input_shapes)
    proto, upgraded_from = _upgrade_opset(proto, source)
    _structural_initializers_to_constants(proto)
    try:
        proto = shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception as err:
        raise ModelLoadError(f"{source}: shape inference failed: {_first_line(err)}") from None
    check_supported(proto, source)
    inputs = [_value_spec(vi) for vi in _graph_inputs(proto)]
    output_names = [vi.name for vi in proto.graph.output]
    try:
        # the importer prints its failures to stdout; the error raised below says it once
        with contextlib.redirect_stdout(io.StringIO()):
            mod = from_onnx(proto, keep_params_in_input=True)
    except Exception as err:
        raise UnsupportedOpError(f"{source}: the Relax importer failed: {_first_line(err)}"
                                 f"{_symbolic_hint(inputs)}") from None
    mod, detached = relax.frontend.detach_params(clip_as_min_max(mod))
    main = mod["main"].without_attr("params")
    mod["main"] = main
    weight_vars = main.params[len(inputs):]
    _unique_weight_names([v.name for v in weight_vars], source)
    params = {v.name: np.asarray(t.numpy()) for v, t in zip(weight_vars, detached.get("main", []))}
    # Output shapes as Relax inferred them (ONNX files often omit them).
    ret = main.ret_ty
    ret_types = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    outputs = [TensorSpec(n, shape_of(t), str(t.dtype)) for n, t in zip(output_names, ret_types)]
    # Inputs: Relax's view of the shape (symbolic names preserved), ONNX's names.
    inputs = [TensorSpec(spec.name, shape_of(v.ty), str(v.ty.dtype)) for spec, v in zip(inputs, main.params)]
    annotations: dict = {"source_sha256": hashlib.sha256(proto.SerializeToString()).hexdigest()}
    if upgraded_from is not None:
        annotations["opset_upgraded_from"] = upgraded_from
    return Model(mod=mod, params=params, inputs=inputs, outputs=outputs, name=name or source,
                 annotations=annotations)
