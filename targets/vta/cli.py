"""``hwcompile vta ...`` sub-commands (registered with the target registry)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hwcompile.errors import VTAError
from hwcompile.target import register_commands

from .config import load_config, shipped_configs
from .disasm import disassemble


@register_commands
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``vta`` command (with ``disasm``) to an argparse subparsers object."""
    vta = subparsers.add_parser("vta", help="VTA accelerator tools")
    sub = vta.add_subparsers(dest="vta_command", required=True)
    dis = sub.add_parser("disasm", help="print a VTA instruction stream, one per line")
    dis.add_argument("program", type=Path, help="encoded instructions (16 bytes each)")
    dis.add_argument("--config", default="sim",
                     help=f"shipped config ({', '.join(shipped_configs())}) or path to a "
                          f"vta_config.json (default: sim)")
    dis.set_defaults(func=run_disasm)
    return vta


def run_disasm(args: argparse.Namespace) -> int:
    """Print the listing; user errors raise VTAError for the main CLI to report."""
    cfg = load_config(args.config)
    try:
        data = args.program.read_bytes()
    except OSError as exc:
        raise VTAError(f"{args.program}: cannot read VTA program: {exc.strerror}") from exc
    if not data:
        raise VTAError(f"{args.program}: empty file, no VTA instructions")
    print(disassemble(data, cfg))
    return 0
