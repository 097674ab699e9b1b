"""``tvm.compile`` of a Relax module with its kernels lowered and compiled on several threads.

After the Relax pipeline, TVM lowers every kernel's TIR and runs LLVM on all of them as one
module, on one thread: 22 of layout_cdla's ~45 s compile, while the machine's other core
idles. Here the kernels are split into one module per available core, built in parallel
(TVM's calls release the GIL) and linked as one executable: the root module imports the
others, and exporting it links all their objects into one library. Each kernel is the same
function compiled by the same LLVM with the same options, so the code is the same; only
the grouping into LLVM modules differs. ``export_library`` then has LLVM emit the modules'
object files on threads too, which TVM's export does one after the other.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable

import tvm
from tvm import relax
from tvm.relax import vm_build
from tvm.runtime import _ffi_api as runtime_api
from tvm.support import cc

MAX_JOBS = 4  # each job holds a whole LLVM module in memory


def default_jobs() -> int:
    return max(1, min(MAX_JOBS, len(os.sched_getaffinity(0))))


def _on_threads(work: Callable[[int], None], count: int) -> None:
    """``work(0) … work(count - 1)``, each on its own thread (the first on this one); the
    first exception raised re-raised here once all have ended."""
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            work(index)
        except BaseException as err:  # re-raised on the calling thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(1, count)]
    for thread in threads:
        thread.start()
    run(0)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _build_parts(kernels: tvm.IRModule, target: tvm.target.Target, jobs: int, jit: bool
                 ) -> tvm.runtime.Module:
    """One library for ``kernels`` (PrimFuncs), built as ``jobs`` modules on as many threads;
    with ``jit``, each thread also has LLVM emit its module's machine code for this process
    (else done one module after the other when a VM first looks the kernels up)."""
    items = list(kernels.functions.items())
    parts = [tvm.IRModule(dict(items[i::jobs]), attrs=kernels.attrs)
             for i in range(min(jobs, len(items)))]
    context = tvm.transform.PassContext.current()  # thread-local: each worker enters it
    libs: list[tvm.runtime.Module | None] = [None] * len(parts)

    def build(index: int) -> None:
        with context:
            libs[index] = tvm.tirx.build(parts[index], target=target)
        if jit:  # the first lookup JIT-compiles the whole module
            kernel = next(iter(parts[index].functions.values()))
            libs[index].get_function(str(kernel.attrs["global_symbol"]))

    _on_threads(build, len(parts))
    root = libs[0]
    for lib in libs[1:]:
        root.import_module(lib)
    return root


def compile(mod: tvm.IRModule, target: tvm.target.Target, relax_pipeline: tvm.transform.Pass,
            jobs: int | None = None, jit: bool = False) -> relax.VMExecutable:  # as tvm.compile
    """``tvm.compile(mod, target, relax_pipeline=relax_pipeline)``, its kernels built on
    ``jobs`` threads (default: the cores this process may use); ``jit`` when the executable
    will run in this process, not be exported. Modules with external libraries, and
    cross-compiled ones, go through ``tvm.compile`` unchanged."""
    jobs = jobs or default_jobs()
    with target:
        mod = relax_pipeline(mod)
    attrs = dict(mod.attrs) if mod.attrs else {}
    host = "mtriple" not in target.attrs
    if attrs.get("external_mods") or not host:
        return tvm.compile(mod, target, relax_pipeline=None)
    builder = relax.ExecBuilder()
    mod = vm_build._vmcodegen(builder, mod, "bytecode")
    kernels = vm_build._filter_tir(mod)
    lib = _build_parts(kernels, target, jobs, jit) if kernels is not None else None
    params = dict(attrs.get("const_name_to_constant", {}))
    return relax.VMExecutable(relax._ffi_api.VMLink(builder, target, lib, [], params))



def export_library(executable: relax.VMExecutable, path: str) -> None:
    """``executable.export_library(path)`` for a host build, LLVM's machine code for each of
    its kernel modules emitted on a thread of its own (TVM writes them one after the other:
    4 s of layout_cdla's compile). The same object files, named and linked in TVM's order."""
    root = executable.mod
    modules = root._collect_dso_modules()
    if not modules or any(m.kind != "llvm" for m in modules):
        executable.export_library(path)
        return
    with tempfile.TemporaryDirectory() as work:
        files = [os.path.join(work, f"lib{i}.o") for i in range(len(modules))]
        _on_threads(lambda i: modules[i].write_to_file(files[i]), len(modules))
        if root.imports:  # the VM's bytecode and the import tree, as export_library packs them
            first = modules[-1]
            prefix = first.get_function("__tvm_get_system_lib_prefix")() or ""
            packed = runtime_api.ModulePackImportsToLLVM(
                root, first.get_function("__tvm_is_system_module")(),
                first.get_function("_get_target_string")(), prefix)
            files.append(os.path.join(work, f"{prefix}devc.o"))
            packed.write_to_file(files[-1])
        cc.create_shared(path, files)
