"""VTA programs in an artifact, and the packed function the host module calls to run them.

Per program the artifact holds, in the ISA's binary formats: ``<name>.insn.bin`` (128-bit
instructions), ``<name>.uop.bin`` (32-bit micro-ops), ``<name>.wgt.bin`` (weights as WGT
elements) and ``<name>.vec<k>.bin`` (int32 per-channel vectors as ACC elements); the
memory map in metadata.json says where each lands in the program's DRAM image and where
the runtime writes inputs and reads the output. ``vta_config.json`` is the config the
programs were built for.

Loading checks that config against the accelerator this runtime drives — the config named
by ``$HWCOMPILE_VTA_CONFIG`` (the board's vta_config.json, as on a VTA board), else the
artifact's own — and that HW_VER is one this runtime executes. On this machine the
"accelerator" is the simulator: ``hwcompile.vta.run(key, data, *residuals, out)`` packs
each sample into the blocked layout, runs the program, and unpacks the result.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwcompile.errors import ArtifactError, VTAError

from .config import HW_VERSIONS, VTAConfig, from_dict, load_config
from .isa import decode_program
from .layout import pack_activations, unpack_activations
from .lower import Lowered
from .partition import PACKED_FUNC
from .program import Buffer
from .simulator import Simulator

CONFIG_FILE = "vta_config.json"
PROGRAM_DIR = "vta"
CONFIG_ENV = "HWCOMPILE_VTA_CONFIG"


@dataclass
class Image:
    """A loaded program: what the packed function needs to run one sample."""

    cfg: VTAConfig
    instructions: list
    dram: np.ndarray
    buffers: dict[str, Buffer]
    out_channels: int
    calls: int = 0  # samples run since loading (read by bench)


_IMAGES: dict[int, Image] = {}


def program_key(insn: bytes, dram: np.ndarray) -> int:
    """A content key for a program (fits a Relax int64 PrimValue)."""
    return int(hashlib.sha256(insn + dram.tobytes()).hexdigest()[:15], 16)


def write_program(lowered: Lowered, name: str, out_dir: Path) -> dict[str, Any]:
    """Write a program's binary files under ``out_dir/vta``; return its memory map entry."""
    prog = lowered.program
    folder = out_dir / PROGRAM_DIR
    folder.mkdir(exist_ok=True)
    insn = prog.insn_bytes()
    files = {"insn": f"{PROGRAM_DIR}/{name}.insn.bin", "uops": f"{PROGRAM_DIR}/{name}.uop.bin"}
    (out_dir / files["insn"]).write_bytes(insn)
    (out_dir / files["uops"]).write_bytes(prog.uop_blob)
    buffers = {}
    for buf in [*prog.buffers.values(), prog.uop_buffer]:
        if buf is None:
            continue
        entry = {"offset": buf.offset, "nbytes": buf.nbytes, "shape": list(buf.shape),
                 "dtype": str(buf.dtype)}
        if buf.name == "weights" or buf.name.startswith("vector"):
            short = "wgt" if buf.name == "weights" else buf.name.replace("vector", "vec")
            entry["file"] = f"{PROGRAM_DIR}/{name}.{short}.bin"
            (out_dir / entry["file"]).write_bytes(prog.dram[buf.offset:buf.offset + buf.nbytes])
        elif buf is prog.uop_buffer:
            entry["file"] = files["uops"]
        buffers["uops" if buf is prog.uop_buffer else buf.name] = entry
    return {"name": name, "key": program_key(insn, prog.dram), "insn": files["insn"],
            "instructions": len(prog.instructions), "dram_bytes": int(prog.dram.size),
            "buffers": buffers, "out_channels": int(lowered.spec.weight.shape[0])}


def device_config(art_config: VTAConfig) -> VTAConfig:
    """The config of the accelerator this runtime drives (see module docstring)."""
    name = os.environ.get(CONFIG_ENV)
    return load_config(name) if name else art_config


def attach(art_dir: Path, meta: dict[str, Any]) -> list[Image]:
    """Check an artifact's VTA config against the device, load its programs and register
    the packed function; the target's runtime hook, called by hwcompile.runtime."""
    extra = meta.get("target_extra", {})
    try:
        art_cfg = from_dict(json.loads((art_dir / CONFIG_FILE).read_text()), CONFIG_FILE)
    except (OSError, json.JSONDecodeError, VTAError) as err:
        raise ArtifactError(f"{art_dir}: cannot read {CONFIG_FILE}: {err}") from None
    if art_cfg.hw_ver not in HW_VERSIONS:
        raise ArtifactError(f"{art_dir}: built for VTA HW_VER {art_cfg.hw_ver}, this runtime "
                            f"executes {', '.join(HW_VERSIONS)}")
    try:
        dev = device_config(art_cfg)
    except VTAError as err:
        raise ArtifactError(f"${CONFIG_ENV}: {err}") from None
    if dev.hw_ver != art_cfg.hw_ver or dev.bitstream != art_cfg.bitstream:
        raise ArtifactError(f"{art_dir}: compiled for VTA {art_cfg.bitstream} (HW_VER "
                            f"{art_cfg.hw_ver}), but the device is {dev.bitstream} (HW_VER "
                            f"{dev.hw_ver}, from ${CONFIG_ENV}); recompile with "
                            f"--target vta:<that config>")
    if extra.get("bitstream") != art_cfg.bitstream:
        raise ArtifactError(f"{art_dir}: metadata names bitstream {extra.get('bitstream')}, "
                            f"{CONFIG_FILE} gives {art_cfg.bitstream}; the artifact is corrupt")
    images = []
    for entry in extra.get("programs", []):
        images.append(_load_program(art_dir, entry, dev))
    register_packed_func()
    return images


def _load_program(art_dir: Path, entry: dict[str, Any], cfg: VTAConfig) -> Image:
    insn = (art_dir / entry["insn"]).read_bytes()
    try:
        instructions = decode_program(insn, cfg)
    except VTAError as err:
        raise ArtifactError(f"{art_dir}: {entry['insn']}: {err}") from None
    dram = np.zeros(entry["dram_bytes"], np.uint8)
    buffers = {}
    for name, b in entry["buffers"].items():
        buffers[name] = Buffer(name, b["offset"], b["nbytes"], tuple(b["shape"]),
                               np.dtype(b["dtype"]))
        if "file" in b:
            data = np.frombuffer((art_dir / b["file"]).read_bytes(), np.uint8)
            dram[b["offset"]:b["offset"] + data.size] = data
    if program_key(insn, dram) != entry["key"]:
        raise ArtifactError(f"{art_dir}: program {entry['name']} does not match its key")
    image = Image(cfg, instructions, dram, buffers, entry["out_channels"])
    _IMAGES[entry["key"]] = image
    return image


def register(key: int, lowered: Lowered) -> Image:
    """Make a just-lowered program runnable under ``key`` (tests, the tuner)."""
    prog = lowered.program
    image = Image(prog.config, prog.instructions, prog.dram, dict(prog.buffers),
                  int(lowered.spec.weight.shape[0]))
    _IMAGES[key] = image
    register_packed_func()
    return image


def run_sample(image: Image, x: np.ndarray, residuals: list[np.ndarray]) -> np.ndarray:
    """One sample (C, H, W) through the program; returns (O, OH, OW) int8."""
    dram = image.dram.copy()

    def put(name: str, packed: np.ndarray) -> None:
        buf = image.buffers[name]
        dram[buf.offset:buf.offset + buf.nbytes] = packed.astype(buf.dtype).view(np.uint8).ravel()

    put("input", pack_activations(x[None], image.cfg))
    for k, r in enumerate(residuals):
        put(f"residual{k}", pack_activations(r[None].astype(np.int32), image.cfg))
    Simulator(image.cfg, dram, "hardware").run(image.instructions)
    out = image.buffers["output"]
    raw = dram[out.offset:out.offset + out.nbytes].view(out.dtype).reshape(out.shape)
    image.calls += 1
    return unpack_activations(raw, 1, image.out_channels)[0]


def _run(key: int, *args: Any) -> None:
    *inputs, out = args
    image = _IMAGES.get(int(key))
    if image is None:
        raise VTAError(f"VTA program {key} is not loaded; load the artifact with hwcompile.load")
    x = inputs[0].numpy()
    residuals = [a.numpy() for a in inputs[1:]]
    as4d = (lambda a: a[:, :, None, None]) if x.ndim == 2 else (lambda a: a)  # dense: 1x1
    x, residuals = as4d(x), [as4d(r) for r in residuals]
    result = np.stack([run_sample(image, x[n], [r[n] for r in residuals])
                       for n in range(x.shape[0])])
    out.copyfrom(np.ascontiguousarray(result.reshape(tuple(out.shape))))


_registered = False


def register_packed_func() -> None:
    global _registered
    if not _registered:
        import tvm_ffi

        tvm_ffi.register_global_func(PACKED_FUNC, _run, override=True)
        _registered = True


def calls() -> dict[int, int]:
    """Samples each loaded program has run (for bench's simulated-cycle figures)."""
    return {key: image.calls for key, image in _IMAGES.items()}
