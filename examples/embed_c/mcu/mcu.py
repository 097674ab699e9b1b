"""Build a runtime-free model (``--emit c-standalone``) into this example program and run it:
bare metal on a Cortex-M3 or Cortex-M4F under QEMU (Arm's MPS2 boards), or on the host.

    python examples/embed_c/mcu/mcu.py run ART_DIR [--core cortex-m3|cortex-m4f|host] [--samples N]

builds with the model's sources unchanged (``-std=c99 -Wall -Wextra -Werror``), runs N
digits images compiled into the program, and prints flash, RAM, stack and instruction
figures from the linker map and the run. The tests and benchmarks/mcu_figures.py import it.
Needs ``gcc-arm-none-eabi``, ``libnewlib-arm-none-eabi`` and ``qemu-system-arm`` (Debian).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
TOOLS = {"gcc": "arm-none-eabi-gcc", "qemu": "qemu-system-arm"}
DEBIAN_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


@dataclass(frozen=True)
class Core:
    name: str
    machine: str               # QEMU's board with this core
    flags: tuple[str, ...]     # compiler flags selecting the core, its FPU and ABI


CORES = {
    "cortex-m3": Core("cortex-m3", "mps2-an385", ("-mcpu=cortex-m3", "-mthumb",
                                                   "-mfloat-abi=soft")),
    "cortex-m4f": Core("cortex-m4f", "mps2-an386", ("-mcpu=cortex-m4", "-mthumb",
                                                     "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard")),
}


def missing_tools() -> str | None:
    """Why the bare-metal runs cannot happen here (None: they can)."""
    absent = [tool for tool in TOOLS.values() if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not installed (Debian: apt-get install {DEBIAN_PACKAGES})"
    probe = subprocess.run([TOOLS["gcc"], "-mcpu=cortex-m3", "-mthumb", "-print-file-name=libc.a"],
                           capture_output=True, text=True, check=False)
    if not Path(probe.stdout.strip()).is_file():
        return "newlib for arm-none-eabi not installed (Debian: libnewlib-arm-none-eabi)"
    return None


@dataclass(frozen=True)
class Model:
    """A c-standalone artifact's model: name, sources and its header's figures."""

    art: Path
    name: str
    header: Path
    sources: tuple[Path, ...]
    macros: dict[str, str]

    @classmethod
    def from_artifact(cls, art: str | Path) -> Model:
        art = Path(art)
        info = json.loads((art / "metadata.json").read_text())["embed"]["c_standalone"]
        header = art / info["header"]
        macros = dict(re.findall(r"^#define (\w+) (.+?)\s*(?:/\*.*)?$", header.read_text(),
                                 re.MULTILINE))
        return cls(art, info["name"], header, tuple(art / s for s in info["sources"]), macros)

    def macro(self, suffix: str) -> int:
        return int(self.macros[f"{self.name.upper()}_{suffix}"])


def write_samples(path: Path, samples: np.ndarray) -> Path:
    """``samples.c``: the inputs (one per row of ``samples``) as bytes in flash."""
    data = np.ascontiguousarray(samples).tobytes()
    rows = [", ".join(str(b) for b in data[i:i + 24]) for i in range(0, len(data), 24)]
    # Aligned: the model reads them as their dtype (floats need 4-byte alignment on an FPU).
    path.write_text("#include <stdint.h>\n"
                    f"const uint32_t hwc_num_samples = {len(samples)}u;\n"
                    f"__attribute__((aligned(16))) const unsigned char "
                    f"hwc_samples[{max(len(data), 1)}] = {{\n"
                    + ",\n".join(rows) + "};\n")
    return path


def _model_flags(model: Model) -> list[str]:
    return [f"-DHWC_MODEL={model.name}", f"-DHWC_MODEL_UPPER={model.name.upper()}",
            f'-DHWC_MODEL_HEADER="{model.header.name}"', f"-I{model.header.parent}", f"-I{HERE}"]


def _run(argv: list[str | Path], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False,
                          **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(str(argv[0])).name} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout)[-3000:]}")
    return proc


def build(model: Model, samples: np.ndarray, out: Path, core: str = "cortex-m3",
          opt: str = "-Os") -> Path:
    """Compile and link the example program for ``core`` ("host" or a key of CORES); each
    source to its own object, so the map attributes every byte. Returns the program."""
    out.mkdir(parents=True, exist_ok=True)
    program_sources = [HERE / "main.c", write_samples(out / "samples.c", samples)]
    if core == "host":
        objects = [_compile("gcc", s, out, [opt, *_model_flags(model)])
                   for s in [*model.sources, *program_sources, HERE / "platform_host.c"]]
        _run(["gcc", *objects, "-lm", "-o", out / "program"])
        return out / "program"
    flags = [*CORES[core].flags, opt, "-ffunction-sections", "-fdata-sections",
             *_model_flags(model)]
    objects = [_compile(TOOLS["gcc"], s, out, flags) for s in model.sources]
    # The program's own loops stay loops (no memcpy/memset calls), so every library routine
    # in the map is one the model needs.
    objects += [_compile(TOOLS["gcc"], s, out, [*flags, "-fno-tree-loop-distribute-patterns"])
                for s in [*program_sources, HERE / "platform_mps2.c"]]
    _run([TOOLS["gcc"], *CORES[core].flags, "-nostartfiles", "-T", HERE / "mps2.ld",
          "-Wl,--gc-sections", f"-Wl,-Map={out / 'program.map'}", *objects,
          "-Wl,--start-group", "-lm", "-lc", "-lgcc", "-Wl,--end-group",
          "-o", out / "program.elf"])
    return out / "program.elf"


def _compile(cc: str, source: Path, out: Path, flags: list[str]) -> Path:
    obj = out / f"{source.stem}.o"
    _run([cc, *WARNINGS, *flags, "-c", source, "-o", obj])
    return obj


@dataclass
class Run:
    outputs: list[bytes]
    ticks: list[int]
    stack_bytes: int
    instructions_per_tick: float

    @property
    def instructions(self) -> list[int]:
        return [round(t * self.instructions_per_tick) for t in self.ticks]


def run(program: Path, core: str = "cortex-m3", timeout: float = 300,
        count_instructions: bool = False) -> Run:
    """Run the program (under QEMU for a Cortex-M core) and parse what it printed. With
    ``count_instructions``, QEMU's -icount makes its clock (and SysTick) advance by one
    step per instruction, so ticks convert to instructions (about twice as slow)."""
    if core == "host":
        argv: list[str | Path] = [program]
    else:
        argv = [TOOLS["qemu"], "-M", CORES[core].machine, "-nographic", "-monitor", "none",
                "-serial", "none", "-semihosting-config", "enable=on,target=native",
                *(["-icount", "shift=0"] if count_instructions else []), "-kernel", program]
    proc = _run(argv, timeout=timeout)
    printed = proc.stdout if core == "host" else proc.stderr  # QEMU: semihosting → stderr
    values: dict[str, list[str]] = {}
    for line in printed.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, []).append(value)
    if "done" not in values:
        raise RuntimeError(f"{program.name} stopped early: {printed[-500:]}")
    calibration = int(values["calibration_ticks"][0])
    return Run([bytes.fromhex(v) for v in values["out"]], [int(t) for t in values["ticks"]],
               int(values["stack"][0]),
               int(values["calibration_instructions"][0]) / calibration if calibration else 0.0)


@dataclass
class MapFigures:
    """Bytes by (where: flash/ram, what: kernels/weights/glue/library/program)."""

    sizes: dict[tuple[str, str], int] = field(default_factory=dict)
    symbols: dict[str, int] = field(default_factory=dict)   # model symbols' sizes

    def get(self, where: str, what: str) -> int:
        return self.sizes.get((where, what), 0)


_OUTPUT_SECTION = re.compile(r"^(\.\w[\w.]*)\s+0x[0-9a-f]+\s+0x[0-9a-f]+", re.MULTILINE)
_INPUT_SECTION = re.compile(r"^ (\.[\w.$]+|COMMON)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+) (.+)$")
_MEMBER_PULLED = re.compile(r"^(\S+\.a\(\S+\))\n\s+(\S+) \((\S+)\)$", re.MULTILINE)


def _library_pulled_by_model(text: str, model_objects: set[str]) -> set[str]:
    """Archive members the model's objects pulled in, directly or through other members."""
    head = text.split("Discarded input sections")[0]
    pulled_by = {member: by for member, by, _ in _MEMBER_PULLED.findall(head)}
    def root(member: str) -> str:
        seen = set()
        while member in pulled_by and member not in seen:
            seen.add(member)
            member = pulled_by[member]
        return member
    return {m for m in pulled_by if Path(root(m)).name in model_objects}


def map_figures(map_file: Path, model: Model) -> MapFigures:
    """Attribute every kept input section in the linker map to the model's kernels, its
    weights, its glue, the library routines the model pulled in, or the example program."""
    text = map_file.read_text()
    body = text.split("Linker script and memory map", 1)[1]
    body = re.sub(r"^ (\S+)\n\s+(0x)", r" \1 \2", body, flags=re.MULTILINE)  # unwrap long names
    glue, weights = f"{model.name}.o", f"{model.name}_weights.o"
    library = _library_pulled_by_model(text, {glue, weights})
    figures = MapFigures()
    where = None
    for line in body.splitlines():
        head = _OUTPUT_SECTION.match(line)
        if head:
            name = head.group(1)
            where = ("flash" if name in (".text", ".rodata", ".ARM.exidx") else
                     "ram" if name == ".bss" else "both" if name == ".data" else None)
            continue
        match = _INPUT_SECTION.match(line)
        if match is None or where is None:
            continue
        section, size, origin = match.group(1), int(match.group(3), 16), match.group(4).strip()
        if size == 0:
            continue
        file = Path(origin.split("(")[0]).name
        if file == glue:
            what = "kernels" if section.startswith(".text.hwc_kernel_") else "glue"
        elif file == weights:
            what = "weights"
        elif origin in library:
            what = "library"
        else:
            what = "program"
        for place in (("flash", "ram") if where == "both" else (where,)):
            figures.sizes[(place, what)] = figures.sizes.get((place, what), 0) + size
        symbol = section.rsplit(".", 1)[-1]
        if what in ("glue", "weights", "kernels") and symbol:
            figures.symbols[symbol] = figures.symbols.get(symbol, 0) + size
    return figures


def figures(model: Model, samples: np.ndarray, out: Path, core: str) -> dict:
    """Build and run; the figures benchmarks/RESULTS.md records for one model and core."""
    program = build(model, samples, out, core)
    result = run(program, core, count_instructions=True)
    fig = map_figures(out / "program.map", model)
    flash = {w: fig.get("flash", w) for w in ("kernels", "weights", "glue", "library")}
    return {
        "core": core, "model": model.name,
        "flash": {**flash, "total": sum(flash.values()),
                  "overhead": flash["glue"] + flash["library"]},
        "ram": {"arena": fig.symbols.get(f"{model.name}_arena", 0),
                "other": fig.get("ram", "glue") + fig.get("ram", "library")
                - fig.symbols.get(f"{model.name}_arena", 0),
                "stack": result.stack_bytes},
        "header": {"arena": model.macro("ARENA_BYTES"), "weights": model.macro("WEIGHT_BYTES"),
                   "stack_estimate": model.macro("STACK_BYTES")},
        "instructions_per_run": int(np.median(result.instructions)) if result.ticks else None,
        "outputs": result.outputs,
    }


def digits_images(count: int) -> np.ndarray:
    """The first ``count`` of scikit-learn's 8x8 digits, scaled to [0, 1] as the example
    model was trained (float32, N x 1 x 1 x 8 x 8: batch-1 samples)."""
    from sklearn.datasets import load_digits

    return (load_digits().images[:count] / 16.0).astype(np.float32).reshape(count, 1, 1, 8, 8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="build and run an artifact's c-standalone model")
    p.add_argument("artifact")
    p.add_argument("--core", default="cortex-m3", choices=[*CORES, "host"])
    p.add_argument("--samples", type=int, default=10, help="digits images to run")
    p.add_argument("--inputs", help=".npy of samples (N x input shape) instead of digits")
    p.add_argument("--out", default="build/mcu", help="build directory")
    p = sub.add_parser("samples", help="write samples.c with digits images (for CMake)")
    p.add_argument("output")
    p.add_argument("--samples", type=int, default=10)
    args = parser.parse_args(argv)
    if args.command == "samples":
        write_samples(Path(args.output), digits_images(args.samples))
        return 0
    reason = missing_tools() if args.core != "host" else None
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    model = Model.from_artifact(args.artifact)
    samples = np.load(args.inputs) if args.inputs else digits_images(args.samples)
    result = figures(model, samples, Path(args.out), args.core)
    result.pop("outputs")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
