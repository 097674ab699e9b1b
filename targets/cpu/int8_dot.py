"""int8 convolutions on the CPU's integer dot-product instructions: which instruction a
target has, which kernels fit it, their weight packing and the tensor intrinsics.

A conv's inner product ``C[co] += Σ_ci A[ci]·B[co, ci]`` runs ``lanes`` output channels
(int32 sums, one vector register) by ``depth`` input channels per instruction:

- AVX-512 VNNI ``vpdpbusd``: 16 × 4, uint8 activations × int8 weights, 64 multiply-adds;
- AVX-512BW / AVX2 ``vpmaddwd``: 16 × 2 / 8 × 2, int16 activations (widened from int8 by
  the producer, so one broadcast loads a channel pair) × int8 weights widened in-register,
  32 / 16 multiply-adds, exact (int8 products summed in pairs fit int32);

where fp32 FMA does 16 / 8 and the plain widened int8 loop (``vpmulld``) fewer still.
The integer-graph rewrite gives convs uint8 activations where the instruction wants them
(``integer_graph.py``); the default schedule (``defaults.py``) tiles an eligible conv so
its innermost loops are that product, packs the HWIO weights into ``lanes × depth`` tiles
(a copy folded at compile time, like RewriteLayout's), then tensorizes. Kernels scheduled
this way are not tuned: MetaSchedule's search would explore schedules without the
instruction (see tuner.py).

TVM ships a VNNI intrinsic, but it passes ``vpdpbusd`` its byte operands as ``<16 x i32>``,
which LLVM 22 (this TVM wheel's) rejects: it takes ``<64 x i8>`` (llvm-project #155194).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import tvm
from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

from .features import cpu_has


@dataclass(frozen=True)
class DotProduct:
    intrin: str  # registered tensor intrinsic
    instruction: str
    lanes: int  # int32 sums per register: output channels per instruction
    depth: int  # input channels summed per lane
    data_dtype: str  # the activation operand: "uint8" or "int16"


def _desc(lanes: int, depth: int, data_dtype: str):
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((depth,), data_dtype, offset_factor=1),
             B: T.Buffer((lanes, depth), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:depth], B[0:lanes, 0:depth])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, depth):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _vpdpbusd(lanes: int):
    # LLVM ≥ 22 types the byte operands as bytes; older versions as int32 lanes.
    bytes_ = f"int8x{4 * lanes}"
    operand = bytes_ if tvm.target.codegen.llvm_version_major() >= 22 else f"int32x{lanes}"
    sums, bits = f"int32x{lanes}", 32 * lanes

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1),
             B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            a = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(f"llvm.x86.avx512.vpdpbusd.{bits}"),
                C.vload([0], dtype=sums),
                T.reinterpret(T.broadcast(a, lanes), dtype=operand),
                T.reinterpret(B.vload([0, 0], dtype=bytes_), dtype=operand),
                dtype=sums)

    return impl


def _vpmaddwd(lanes: int, llvm_intrinsic: str):
    sums, halves, bytes_ = f"int32x{lanes}", f"int16x{2 * lanes}", f"int8x{2 * lanes}"

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((2,), "int16", offset_factor=1),
             B: T.Buffer((lanes, 2), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:2], B[0:lanes, 0:2])
            T.writes(C[0:lanes])
            pair = T.reinterpret(A.vload([0], "int16x2"), dtype="int32")
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], dtype=sums) + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_intrinsic),
                T.reinterpret(T.broadcast(pair, lanes), dtype=halves),
                T.Cast(halves, B.vload([0, 0], dtype=bytes_)),
                dtype=sums)

    return impl


VNNI = DotProduct("hwcompile_dot_16x4_vpdpbusd", "vpdpbusd", 16, 4, "uint8")
VNNI_256 = DotProduct("hwcompile_dot_8x4_vpdpbusd", "vpdpbusd", 8, 4, "uint8")
MADD_512 = DotProduct("hwcompile_dot_16x2_vpmaddwd", "vpmaddwd", 16, 2, "int16")
MADD_256 = DotProduct("hwcompile_dot_8x2_vpmaddwd", "vpmaddwd", 8, 2, "int16")
# The same instruction on half-width registers (AVX-512VL): convs with 8·k output channels
# run on it as they are, instead of padded to 16·k channels, whose sliced write-back was
# scalar code (a branch per element) costing more than the dot products of a 1×1 conv.
_NARROWER = {VNNI: VNNI_256, MADD_512: MADD_256}
_IMPLEMENTATIONS = {VNNI: functools.partial(_vpdpbusd, 16),
                    VNNI_256: functools.partial(_vpdpbusd, 8),
                    MADD_512: functools.partial(_vpmaddwd, 16, "llvm.x86.avx512.pmaddw.d.512"),
                    MADD_256: functools.partial(_vpmaddwd, 8, "llvm.x86.avx2.pmadd.wd")}


@functools.cache
def intrinsic(dot: DotProduct) -> str:
    """``dot``'s tensor intrinsic, registered on first use (parsing it takes ~0.3 s, which
    a float model should not pay at import)."""
    TensorIntrin.register(dot.intrin, _desc(dot.lanes, dot.depth, dot.data_dtype),
                          _IMPLEMENTATIONS[dot](), override=True)
    return dot.intrin


def int8_dot_product(target: tvm.target.Target) -> DotProduct | None:
    """The widest integer dot product ``target``'s CPU has (None: not x86 or no AVX2)."""
    if target.kind.name != "llvm":
        return None
    for dot, feature in ((VNNI, "avx512vnni"), (MADD_512, "avx512bw"), (MADD_256, "avx2")):
        if cpu_has(target, feature):
            return dot
    return None


def int8_lanes(target: tvm.target.Target) -> int | None:
    """Output channels of the narrowest dot product ``target`` runs int8 convs on (None:
    it has none): what an int8 conv's output channels are padded to."""
    dot = int8_dot_product(target)
    return narrowest(dot).lanes if dot else None


def narrowest(dot: DotProduct) -> DotProduct:
    """The narrowest register width ``dot``'s instruction runs on."""
    return _NARROWER.get(dot, dot)


def fitting_dot(dot: DotProduct, output_channels: int) -> DotProduct | None:
    """``dot``, or its half-width form, whose lanes divide ``output_channels`` (None: neither)."""
    return next((d for d in (dot, narrowest(dot)) if output_channels % d.lanes == 0), None)


def fits_conv(dot: DotProduct, weight_shape: tuple[int, ...]) -> bool:
    """OIHW int8 weights whose output and input channels fill whole dot products (of
    ``dot`` or its half-width form)."""
    return fitting_dot(dot, weight_shape[0]) is not None and weight_shape[1] % dot.depth == 0


def _weight_index(sch: Schedule, block: tvm.s_tir.schedule.SBlockRV) -> int | None:
    """Position of the constant int8 weight among ``block``'s reads (None if there is none)."""
    func = sch.mod["main"]
    free = [func.params[int(i)] for i in func.attrs.get("layout_free_buffers", [])]
    for index, region in enumerate(sch.get(block).reads):
        buf = region.source  # TVM 0.27: a PrimFunc parameter is its buffer
        if str(buf.dtype) == "int8" and any(buf.same_as(p) for p in free):
            return index
    return None


def pack_weights(sch: Schedule, block: tvm.s_tir.schedule.SBlockRV, dot: DotProduct) -> None:
    """HWIO weights [kh, kw, ci, co] → [co/lanes, kh, kw, ci/depth, lanes, depth]: each dot
    product's operand contiguous. The copy is marked as a layout-rewrite preprocessing
    block, so the pipeline splits it out and folds it into the constant."""
    copy = sch.cache_read(block, _weight_index(sch, block), "global")
    sch.transform_layout(copy, ("write", 0), lambda kh, kw, ci, co: (
        co // dot.lanes, kh, kw, ci // dot.depth, co % dot.lanes, ci % dot.depth))
    sch.annotate(copy, "meta_schedule.layout_rewrite_preproc", True)


def block_dot(sch: Schedule, block: tvm.s_tir.schedule.SBlockRV,
              dot: DotProduct | None) -> DotProduct | None:
    """The form of ``dot`` (full or half width) that ``block`` runs on (``dot_block``), or
    None when neither fits."""
    if dot is None:
        return None
    return next((d for d in dict.fromkeys((dot, narrowest(dot))) if dot_block(sch, block, d)), None)


def dot_block(sch: Schedule, block: tvm.s_tir.schedule.SBlockRV, dot: DotProduct) -> bool:
    """Whether ``block`` is an int32 sum of activation × constant int8 weight products (an
    int8 NHWC conv, activations of the instruction's type) whose output channels and
    innermost reduction fill ``dot``. The weight must be a constant (``layout_free_buffers``):
    only then can it be packed."""
    stmt = sch.get(block)
    reads = [region.source for region in stmt.reads]
    weight = _weight_index(sch, block)
    if (len(stmt.writes) != 1 or str(stmt.writes[0].source.dtype) != "int32"
            or weight is None or len(reads[weight].shape) != 4):
        return False
    data = [str(buf.dtype) for i, buf in enumerate(reads) if i != weight and str(buf.dtype) != "int32"]
    if data != [dot.data_dtype]:
        return False
    extents = [sch.get(loop).extent for loop in sch.get_loops(block)]
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    spatial = [e for e, k in zip(extents, kinds) if k == 0]
    reduce = [e for e, k in zip(extents, kinds) if k == 2]
    if not spatial or not reduce or not all(isinstance(e, tvm.tirx.IntImm) for e in (spatial[-1], reduce[-1])):
        return False
    shape = [int(d) for d in reads[weight].shape]  # HWIO: its last two axes are ci and co
    return (shape[3] == int(spatial[-1]) and shape[2] == int(reduce[-1])
            and shape[3] % dot.lanes == 0 and shape[2] % dot.depth == 0)
