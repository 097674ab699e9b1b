"""VTA configuration: load and validate ``vta_config.json``, derive every size and depth.

The fields and derivations follow apache/tvm-vta ``config/vta_config.json`` and
``include/vta/hw_spec.h`` (ISA revision 0.0.2). Board facts (clock, AXI width) are not part
of the upstream file; a config may carry them as ``FPGA_DEVICE``/``CLOCK_MHZ``/``AXI_WIDTH``,
otherwise they default from :data:`BOARDS` by ``TARGET``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hwcompile.errors import VTAError

from .isa import UOP_BITS, layouts

CONFIG_DIR = Path(__file__).parent / "configs"

TARGETS = ("sim", "tsim", "pynq", "ultra96", "zcu104", "de10nano", "intelfocl")
HW_VERSIONS = ("0.0.2",)

# (device, clock MHz, AXI data width bits). sim/tsim/intelfocl have no fixed board: the
# pynq figures are used as a nominal board so the cycle model still yields a latency.
BOARDS: dict[str, tuple[str, float, int]] = {
    "pynq": ("xc7z020 (Zynq-7000)", 100.0, 64),
    "ultra96": ("xczu3eg (Zynq UltraScale+)", 333.0, 128),
    "zcu104": ("xczu7ev (Zynq UltraScale+)", 333.0, 128),
    "de10nano": ("5CSEBA6U23I7 (Cyclone V SoC)", 100.0, 64),
    "sim": ("none (nominal pynq board)", 100.0, 64),
    "tsim": ("none (nominal pynq board)", 100.0, 64),
    "intelfocl": ("none (nominal pynq board)", 100.0, 64),
}

# Every upstream vta_config.json field; all are required.
LOG_FIELDS = (
    "LOG_INP_WIDTH",
    "LOG_WGT_WIDTH",
    "LOG_ACC_WIDTH",
    "LOG_BATCH",
    "LOG_BLOCK",
    "LOG_UOP_BUFF_SIZE",
    "LOG_INP_BUFF_SIZE",
    "LOG_WGT_BUFF_SIZE",
    "LOG_ACC_BUFF_SIZE",
)
REQUIRED_FIELDS = ("TARGET", "HW_VER", *LOG_FIELDS)
BOARD_FIELDS = ("FPGA_DEVICE", "CLOCK_MHZ", "AXI_WIDTH")


@dataclass(frozen=True)
class VTAConfig:
    """A validated VTA configuration. Build it with :func:`load_config` or :func:`from_dict`."""

    target: str
    hw_ver: str
    log_inp_width: int
    log_wgt_width: int
    log_acc_width: int
    log_batch: int
    log_block: int
    log_uop_buff_size: int
    log_inp_buff_size: int
    log_wgt_buff_size: int
    log_acc_buff_size: int
    fpga_device: str
    clock_mhz: float
    axi_width: int

    # --- element geometry -------------------------------------------------------------
    @property
    def batch(self) -> int:
        return 1 << self.log_batch

    @property
    def block(self) -> int:
        return 1 << self.log_block

    block_in = block_out = block

    @property
    def log_out_width(self) -> int:
        return self.log_inp_width

    @property
    def inp_width(self) -> int:
        return 1 << self.log_inp_width

    @property
    def wgt_width(self) -> int:
        return 1 << self.log_wgt_width

    @property
    def acc_width(self) -> int:
        return 1 << self.log_acc_width

    @property
    def out_width(self) -> int:
        return 1 << self.log_out_width

    @property
    def log_out_buff_size(self) -> int:
        return self.log_acc_buff_size + self.log_out_width - self.log_acc_width

    # Element sizes in bytes (one SRAM row / one DRAM element of each memory type).
    @property
    def inp_elem_bytes(self) -> int:
        return self.batch * self.block_in * self.inp_width // 8

    @property
    def wgt_elem_bytes(self) -> int:
        return self.block_out * self.block_in * self.wgt_width // 8

    @property
    def acc_elem_bytes(self) -> int:
        return self.batch * self.block_out * self.acc_width // 8

    @property
    def out_elem_bytes(self) -> int:
        return self.batch * self.block_out * self.out_width // 8

    uop_elem_bytes = UOP_BITS // 8

    # --- SRAM depths (log2 of elements) ---------------------------------------------------
    @property
    def log_uop_depth(self) -> int:
        return self.log_uop_buff_size - 2

    @property
    def log_inp_depth(self) -> int:
        return (self.log_inp_buff_size - self.log_batch - self.log_block
                - self.log_inp_width + 3)

    @property
    def log_wgt_depth(self) -> int:
        return self.log_wgt_buff_size - 2 * self.log_block - self.log_wgt_width + 3

    @property
    def log_acc_depth(self) -> int:
        return (self.log_acc_buff_size - self.log_batch - self.log_block
                - self.log_acc_width + 3)

    @property
    def log_out_depth(self) -> int:
        return self.log_acc_depth

    @property
    def uop_depth(self) -> int:
        return 1 << self.log_uop_depth

    @property
    def inp_depth(self) -> int:
        return 1 << self.log_inp_depth

    @property
    def wgt_depth(self) -> int:
        return 1 << self.log_wgt_depth

    @property
    def acc_depth(self) -> int:
        return 1 << self.log_acc_depth

    @property
    def out_depth(self) -> int:
        return 1 << self.log_out_depth

    # --- names and board ---------------------------------------------------------------------
    @property
    def bitstream(self) -> str:
        """Upstream bitstream name, e.g. ``1x16_i8w8a32_15_15_18_17``."""
        return (f"{self.batch}x{self.block}_i{self.inp_width}w{self.wgt_width}a{self.acc_width}"
                f"_{self.log_uop_buff_size}_{self.log_inp_buff_size}"
                f"_{self.log_wgt_buff_size}_{self.log_acc_buff_size}")

    @property
    def axi_bytes(self) -> int:
        return self.axi_width // 8

    @property
    def peak_gmacs(self) -> float:
        """Peak GEMM throughput: one BATCH x BLOCK x BLOCK product per cycle."""
        return self.batch * self.block_in * self.block_out * self.clock_mhz / 1e3

    def to_dict(self) -> dict:
        """The config as vta_config.json fields (plus the board facts)."""
        out: dict = {"TARGET": self.target, "HW_VER": self.hw_ver}
        for name in LOG_FIELDS:
            out[name] = getattr(self, name.lower())
        out.update(FPGA_DEVICE=self.fpga_device, CLOCK_MHZ=self.clock_mhz,
                   AXI_WIDTH=self.axi_width)
        return out


def from_dict(fields: dict, source: str = "vta config") -> VTAConfig:
    """Validate vta_config.json fields and build a :class:`VTAConfig`; ``source`` names the
    file in error messages."""
    if not isinstance(fields, dict):
        raise VTAError(f"{source}: expected a JSON object of VTA config fields")
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    if missing:
        raise VTAError(f"{source}: missing field(s) {', '.join(missing)}; every field of "
                       f"vta_config.json is required (see targets/vta/configs/sim.json)")
    unknown = sorted(set(fields) - set(REQUIRED_FIELDS) - set(BOARD_FIELDS))
    if unknown:
        raise VTAError(f"{source}: unknown field(s) {', '.join(unknown)}; allowed: "
                       f"{', '.join(REQUIRED_FIELDS + BOARD_FIELDS)}")
    target = fields["TARGET"]
    if target not in TARGETS:
        raise VTAError(f"{source}: TARGET {target!r} is unknown; use one of {', '.join(TARGETS)}")
    if fields["HW_VER"] not in HW_VERSIONS:
        raise VTAError(f"{source}: HW_VER {fields['HW_VER']!r} is unsupported; use "
                       f"{', '.join(HW_VERSIONS)}")
    logs = {}
    for name in LOG_FIELDS:
        value = fields[name]
        # A LOG_ field is an exponent, so it must be a whole number: a fractional value
        # would describe a size that is not a power of two.
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise VTAError(f"{source}: {name} = {value!r} must be a non-negative integer "
                           f"(log2 of a power-of-two size)")
        logs[name.lower()] = value
    # The simulator models int8 inputs/weights/outputs with int32 accumulators; that is
    # the only element width every shipped VTA bitstream uses.
    for name, want in (("LOG_INP_WIDTH", 3), ("LOG_WGT_WIDTH", 3), ("LOG_ACC_WIDTH", 5)):
        if fields[name] != want:
            raise VTAError(f"{source}: {name} = {fields[name]} is unsupported; only "
                           f"{want} (int{1 << want}) is modelled")
    device, clock, axi = BOARDS[target]
    device = fields.get("FPGA_DEVICE", device)
    clock = fields.get("CLOCK_MHZ", clock)
    axi = fields.get("AXI_WIDTH", axi)
    if isinstance(clock, bool) or not isinstance(clock, (int, float)) or clock <= 0:
        raise VTAError(f"{source}: CLOCK_MHZ = {clock!r} must be a positive number")
    if isinstance(axi, bool) or not isinstance(axi, int) or axi < 8 or axi & (axi - 1):
        raise VTAError(f"{source}: AXI_WIDTH = {axi!r} must be a power-of-two bit width >= 8")
    cfg = VTAConfig(target=target, hw_ver=fields["HW_VER"], fpga_device=str(device),
                    clock_mhz=float(clock), axi_width=axi, **logs)
    _check_derived(cfg, source)
    return cfg


def _check_derived(cfg: VTAConfig, source: str) -> None:
    for name, log_depth in (("LOG_UOP_BUFF_SIZE", cfg.log_uop_depth),
                            ("LOG_INP_BUFF_SIZE", cfg.log_inp_depth),
                            ("LOG_WGT_BUFF_SIZE", cfg.log_wgt_depth),
                            ("LOG_ACC_BUFF_SIZE", cfg.log_acc_depth)):
        if log_depth < 1:
            raise VTAError(f"{source}: {name} = {getattr(cfg, name.lower())} leaves a buffer "
                           f"of {1 << max(log_depth, 0)} element(s); increase it")
    uop_bits = cfg.log_acc_depth + cfg.log_inp_depth + cfg.log_wgt_depth
    if uop_bits > UOP_BITS:
        raise VTAError(f"{source}: micro-op fields need {uop_bits} bits (dst {cfg.log_acc_depth}"
                       f" + src {cfg.log_inp_depth} + wgt {cfg.log_wgt_depth}) but a uop has "
                       f"{UOP_BITS}; shrink LOG_ACC/INP/WGT_BUFF_SIZE")
    layouts(cfg, source)  # the instruction layouts must fit their 128 bits


def load_config(name_or_path: str | Path = "sim") -> VTAConfig:
    """A config by shipped name (``sim``, ``pynq``, ``ultra96``, ``zcu104``, ``de10nano``) or
    by path to a vta_config.json."""
    path = Path(name_or_path)
    shipped = CONFIG_DIR / f"{name_or_path}.json"
    if isinstance(name_or_path, str) and "/" not in name_or_path and shipped.is_file():
        path = shipped
    elif not path.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise VTAError(f"VTA config {str(name_or_path)!r} is neither a shipped config "
                       f"({names}) nor an existing JSON file")
    try:
        fields = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VTAError(f"{path}: cannot read VTA config: {exc}") from exc
    return from_dict(fields, str(path))


def shipped_configs() -> list[str]:
    """Names accepted by :func:`load_config`."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
