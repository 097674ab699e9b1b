"""The CPU target through LLVM (see README.md). Modules, one job each:

- ``target``: ``CpuTarget``, spec parsing (host, cross triples, JSON, tags), build;
- ``features``: what the CPU has (LLVM feature checks, vector width, intrinsics family);
- ``pipeline``: the Relax pipeline compile and tune share; ``layout``: NHWC convolutions;
- ``defaults``: heuristic default schedules; ``int8_dot``: int8 convs on dot products;
- ``integer_graph``: rewrites of the quantized graph; ``channel_padding``: whole registers.
"""

from .target import O3_FROM_SAMPLES, CpuTarget, cpu_target, host_build_target, host_target

__all__ = ["O3_FROM_SAMPLES", "CpuTarget", "cpu_target", "host_build_target", "host_target"]
