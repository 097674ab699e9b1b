"""int8 convolutions on AVX-512 VNNI: the dot-product instruction and when a kernel fits it.

``vpdpbusd`` multiplies 4 unsigned by 4 signed bytes and adds the sum to an int32 lane, 16
lanes a register: 64 multiply-adds an instruction where fp32 FMA does 16 and the plain
widened int8 loop ~8. TVM's x86 intrinsic ``dot_16x4_vnni`` computes
``C[i] += Σ_k A[k]·B[i, k]`` with ``A`` 4 uint8 (four input channels of one position),
``B`` 16×4 int8 (16 output channels × those four input channels, contiguous) and ``C`` 16
int32 sums. Its implementation passes the byte operands as ``<16 x i32>``, which LLVM 22
(this TVM wheel's) rejects: its ``vpdpbusd`` takes ``<64 x i8>`` (llvm-project #155194).
``VNNI_DOT_INTRIN`` is the same description with the operand type LLVM expects. The integer-graph rewrite gives int8 convs uint8 activations on VNNI CPUs
(``integer_graph.py``); the default schedule (``defaults.py``) tiles such a conv so its
innermost loops are that 16×4 product, packs the HWIO weights into 16×4 tiles (a copy
folded at compile time, like RewriteLayout's), then tensorizes. Kernels scheduled this way are not tuned: MetaSchedule's
search would explore schedules without the instruction (see tuner.py).
"""

from __future__ import annotations

import tvm
from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

VNNI_LANES = 16  # int32 sums per register
VNNI_DEPTH = 4  # bytes per dot product
VNNI_DOT_INTRIN = "hwcompile_dot_16x4_vnni"
# LLVM ≥ 22 types vpdpbusd's byte operands as bytes; older versions as int32 lanes.
_BYTES = "int8x64" if tvm.target.codegen.llvm_version_major() >= 22 else "int32x16"


@T.prim_func(s_tir=True)
def _dot_desc(A: T.Buffer((4,), "uint8", offset_factor=1),
              B: T.Buffer((16, 4), "int8", offset_factor=1),
              C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dot_vnni(A: T.Buffer((4,), "uint8", offset_factor=1),
              B: T.Buffer((16, 4), "int8", offset_factor=1),
              C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        a = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"),
            T.reinterpret(T.broadcast(a, 16), dtype=_BYTES),
            T.reinterpret(B.vload([0, 0], dtype="int8x64"), dtype=_BYTES),
            dtype="int32x16")


TensorIntrin.register(VNNI_DOT_INTRIN, _dot_desc, _dot_vnni, override=True)


def _weight_index(sch: Schedule, block: tvm.s_tir.schedule.SBlockRV) -> int | None:
    """Position of the constant int8 weight among ``block``'s reads (None if there is none)."""
    func = sch.mod["main"]
    free = [func.params[int(i)] for i in func.attrs.get("layout_free_buffers", [])]
    for index, region in enumerate(sch.get(block).reads):
        buf = region.source  # TVM 0.27: a PrimFunc parameter is its buffer
        if str(buf.dtype) == "int8" and any(buf.same_as(p) for p in free):
            return index
    return None


def pack_vnni_weights(sch: Schedule, block: tvm.s_tir.schedule.SBlockRV) -> None:
    """HWIO weights [kh, kw, ci, co] → [co/16, kh, kw, ci/4, 16, 4]: each dot product's
    16×4 bytes contiguous. The copy is marked as a layout-rewrite preprocessing block, so
    the pipeline splits it out and folds it into the constant."""
    copy = sch.cache_read(block, _weight_index(sch, block), "global")
    sch.transform_layout(copy, ("write", 0), lambda kh, kw, ci, co: (
        co // VNNI_LANES, kh, kw, ci // VNNI_DEPTH, co % VNNI_LANES, ci % VNNI_DEPTH))
    sch.annotate(copy, "meta_schedule.layout_rewrite_preproc", True)


def vnni_block(sch: Schedule, block: tvm.s_tir.schedule.SBlockRV) -> bool:
    """Whether ``block`` is an int32 sum of uint8 × constant int8 products (a conv after
    the uint8 rewrite) whose output channels and innermost reduction fill the intrinsic.
    The weight must be a constant (``layout_free_buffers``): only then can it be packed."""
    stmt = sch.get(block)
    reads = [region.source for region in stmt.reads]
    dtypes = sorted(str(buf.dtype) for buf in reads if str(buf.dtype) != "int32")
    weight = _weight_index(sch, block)
    if (len(stmt.writes) != 1 or str(stmt.writes[0].source.dtype) != "int32"
            or dtypes != ["int8", "uint8"] or weight is None
            or len(reads[weight].shape) != 4):
        return False
    loops = sch.get_loops(block)
    extents = [sch.get(loop).extent for loop in loops]
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    spatial = [e for e, k in zip(extents, kinds) if k == 0]
    reduce = [e for e, k in zip(extents, kinds) if k == 2]
    if not spatial or not reduce or not all(isinstance(e, tvm.tirx.IntImm) for e in (spatial[-1], reduce[-1])):
        return False
    shape = [int(d) for d in reads[weight].shape]  # HWIO: its last two axes are ci and co
    return (shape[3] == int(spatial[-1]) and shape[2] == int(reduce[-1])
            and not (shape[3] % VNNI_LANES or shape[2] % VNNI_DEPTH))
