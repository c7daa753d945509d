"""NVIDIA GPU code: what compiling for an nvptx target needs, and inspection of the PTX a library ships.

Kernels are compiled by LLVM's NVPTX back end to PTX, which the device's CUDA driver JIT-compiles when the module
loads. So no CUDA toolkit is needed at build time (only libdevice), any sm_NN that LLVM knows can be targeted
(nvcc 13 stops at sm_75), and what ships is bounded by the PTX ISA that the device's CUDA accepts.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from packager.errors import CompilationError
from targets import Target
from targets.catalog import ptx_isa_allowed

_CUDA_KIND = struct.pack("<Q", 4) + b"cuda"
_CUDA_C_MARKERS = (b'extern "C" __global__', b"#include <cuda_fp16.h>", b"__launch_bounds__")
_LIBDEVICE_HOMES = ("/usr/local/cuda", "/usr/lib/cuda", "/opt/cuda")


@dataclass(frozen=True)
class PtxModule:
    version: tuple[int, int]  # .version: the PTX ISA
    target: str  # .target: "sm_72"
    size: int  # bytes of PTX text
    entries: tuple[str, ...] = ()  # .entry functions: the kernels a host can launch
    kernels: tuple[str, ...] = ()  # what the module's function table says the host will launch


@dataclass(frozen=True)
class ShippedGpuCode:
    """What a compiled library carries for the GPU."""

    formats: tuple[str, ...]  # one per CUDA module: "ptx", or "cu"/"cubin"/... for anything else
    ptx: tuple[PtxModule, ...]
    has_cuda_source: bool  # CUDA C that would need NVRTC on the device


def libdevice_home() -> str:
    """The CUDA home whose nvvm/libdevice TVM links into NVPTX kernels for math functions."""
    for home in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), *_LIBDEVICE_HOMES):
        if home and list(Path(home).glob("nvvm/libdevice/libdevice*.bc")):
            return home
    raise CompilationError(
        "NVIDIA targets need CUDA's libdevice (nvvm/libdevice/libdevice.10.bc) at build time; "
        "set CUDA_PATH to a CUDA toolkit, or install one with: apt-get install -y nvidia-cuda-toolkit"
    )


def _lower_storage_sync(call):
    """TVM 0.27's nvptx codegen calls llvm.nvvm.barrier.cta.sync.aligned.all without the barrier id LLVM 21+ requires."""
    from tvm import tirx

    scope = call.args[0].value if hasattr(call.args[0], "value") else str(call.args[0])
    if scope in ("shared", "shared.dyn"):
        return tirx.call_llvm_intrin("void", "llvm.nvvm.barrier.cta.sync.aligned.all", tirx.const(0, "int32"))
    return call


_registered = False


def prepare_nvptx() -> None:
    """Before compiling for an nvptx target: the barrier fix above, and libdevice for math functions."""
    global _registered
    if not _registered:
        from tvm import tirx

        tirx.op.register_intrin_lowering("tirx.tvm_storage_sync", "nvptx", f=_lower_storage_sync, level=99)
        _registered = True
    os.environ.setdefault("CUDA_PATH", libdevice_home())


def int32_take_indices():
    """A Relax pass: ``take`` with int64 indices (ONNX Gather's) takes them as int32 instead.

    TVM 0.27's NVPTX codegen multiplies the int32 thread index by the int64 extents of a kernel that keeps int64
    indices (LLVM refuses ``mul i32 %tid, i64 1024``), and a kernel reading an int64 index buffer cannot be narrowed.
    Image models gather from axes far below 2**31 elements, where the cast loses nothing."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Int32Take(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if (
                isinstance(call.op, tvm.ir.Op)
                and call.op.name == "relax.take"
                and getattr(call.args[1].ty, "dtype", None) == "int64"
                and _gathered_extent(call) < 2**31
            ):
                return relax.op.take(
                    call.args[0], relax.op.astype(call.args[1], "int32"), axis=call.attrs.axis, mode=call.attrs.mode
                )
            return call

    @tvm.transform.module_pass(opt_level=0, name="Int32TakeIndices")
    def _pass(mod, _ctx):
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod[gvar] = _Int32Take().visit_expr(func)
        return mod

    return _pass


def _gathered_extent(call) -> int:
    shape = getattr(call.args[0].ty, "shape", None)
    if shape is None or call.attrs.axis is None:
        return 2**63
    try:
        return int(shape[int(call.attrs.axis)])
    except (TypeError, ValueError):  # a symbolic extent
        return 2**63


def narrow_indices_to_int32():
    """A TIR pass: every scheduled kernel whose buffers all fit int32 indices computes them in int32 (see above).
    A kernel that keeps int64 data (top-k's and argmin's indices, a gather by them) cannot be narrowed; its thread
    extents become int32 instead (``int32_thread_extents``), which is all the codegen needs."""
    import tvm
    from tvm import tirx

    def fits(func) -> bool:
        for param in func.params:
            buffer = param.ty
            if not isinstance(buffer, tirx.BufferType):
                continue
            if "int64" in str(buffer.dtype):
                return False
            elements = 1
            for extent in buffer.shape:
                if not isinstance(extent, tirx.IntImm):
                    return False
                elements *= int(extent)
            if elements >= 2**31:
                return False
        return True

    @tvm.transform.module_pass(opt_level=0, name="NarrowIndicesToInt32")
    def _pass(mod, _ctx):
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, tirx.PrimFunc):
                continue
            if fits(func):
                mod[gvar] = tirx.transform.ForceNarrowIndexToInt32()(tvm.IRModule({gvar: func}))[gvar]
            else:
                mod[gvar] = int32_thread_extents(func)
        return mod

    return _pass


_THREAD_EXTENT = re.compile(r'T\.(launch_thread\("[\w.]+", |thread_binding\()')


def int32_thread_extents(func):
    """``func`` with every int64 thread extent cast to int32, so each thread index is an int32 that TIR widens where
    int64 arithmetic uses it. TVM 0.27's NVPTX codegen reads threadIdx/blockIdx as i32 and uses them unconverted in
    a kernel whose thread variables are int64 (``mul i32 %tid, i64 1024``: LLVM refuses the module).

    The Python API has no TIR mutator, so this goes through TVMScript: the kernel is printed, each int64 extent of
    ``T.launch_thread(tag, extent)`` and ``T.thread_binding(extent, ...)`` is wrapped in ``T.Cast("int32", ...)``,
    and the text is parsed back. Thread and block counts are far below 2**31, so the cast loses nothing. A kernel
    that does not print and parse back is returned unchanged."""
    import tvm

    source = func.script(show_meta=True)
    pieces, done = [], 0
    try:
        for match in _THREAD_EXTENT.finditer(source):
            start = match.end()
            end = _extent_end(source, start, stop_at_comma=match.group(1).startswith("thread_binding"))
            extent = source[start:end]
            if "int64" in extent:
                pieces += [source[done:start], f'T.Cast("int32", {extent})']
                done = end
        if done == 0:
            return func
        pieces.append(source[done:])
        return tvm.script.from_source("".join(pieces))  # the printed T.func_attr carries the attributes over
    except Exception:  # noqa: BLE001 - TVMScript could not take its own output back: compile the kernel as it was
        return func


def _extent_end(source: str, start: int, stop_at_comma: bool) -> int:
    """Where the argument starting at ``start`` ends: its closing parenthesis, or (``stop_at_comma``) its comma."""
    depth = 0
    for i in range(start, len(source)):
        c = source[i]
        if c in "([":
            depth += 1
        elif c in ")]":
            if depth == 0:
                return i
            depth -= 1
        elif c == "," and depth == 0 and stop_at_comma:
            return i
    raise ValueError(f"unbalanced TVMScript after offset {start}")


def parse_ptx(text: str, kernels: tuple[str, ...] = ()) -> PtxModule:
    version = re.search(r"^\s*\.version\s+(\d+)\.(\d+)", text, re.M)
    target = re.search(r"^\s*\.target\s+(sm_\w+)", text, re.M)
    if not version or not target:
        raise CompilationError("GPU module is not PTX: it has no .version/.target directive")
    entries = tuple(re.findall(r"^\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+(\w+)\s*\(", text, re.M))
    return PtxModule(
        version=(int(version[1]), int(version[2])), target=target[1], size=len(text), entries=entries, kernels=kernels
    )


@dataclass(frozen=True)
class _CudaModule:
    """One CUDA module in TVM's serialized module blob: kind "cuda", u64 byte length, then the module's bytes,
    which are the format string, the function table (one FunctionInfo per kernel) and the code, each length-prefixed."""

    length_at: int  # offset of the module's u64 byte length
    format: str
    kernels: tuple[str, ...]
    code_at: int  # offset of the code (its u64 length sits just before)
    code_length: int


def _read_cuda_module(data: bytes, at: int) -> _CudaModule:
    def u64(offset: int) -> int:
        return struct.unpack_from("<Q", data, offset)[0]

    def string(offset: int) -> tuple[str, int]:
        length = u64(offset)
        return data[offset + 8 : offset + 8 + length].decode("ascii", "replace"), offset + 8 + length

    length_at = at + len(_CUDA_KIND)
    end = length_at + 8 + u64(length_at)
    fmt, pos = string(length_at + 8)
    if len(fmt) >= 16 or end > len(data):
        return _CudaModule(length_at, "?", (), end, 0)
    kernels = []
    count, pos = u64(pos), pos + 8
    for _ in range(count):  # key, then FunctionInfo: name, arg dtypes, launch param tags, arg extra tags
        _, pos = string(pos)
        name, pos = string(pos)
        pos += 8 + 4 * u64(pos)
        tags, pos = u64(pos), pos + 8
        for _ in range(tags):
            _, pos = string(pos)
        pos += 8 + 4 * u64(pos)
        if pos > end:
            raise CompilationError("the library's CUDA module has a function table this packager cannot read")
        kernels.append(name)
    return _CudaModule(length_at, fmt, tuple(kernels), pos + 8, u64(pos))


def shipped_gpu_code(library_path: Path) -> ShippedGpuCode:
    """Read the GPU modules out of an exported library's embedded module blob, for any host architecture."""
    data = Path(library_path).read_bytes()
    formats, ptx = [], []
    at = data.find(_CUDA_KIND)
    while at >= 0:
        module = _read_cuda_module(data, at)
        formats.append(module.format)
        code = data[module.code_at : module.code_at + module.code_length]
        if module.format == "ptx":
            ptx.append(parse_ptx(code.decode("ascii", "replace"), module.kernels))
        at = data.find(_CUDA_KIND, module.length_at)
    return ShippedGpuCode(
        formats=tuple(formats), ptx=tuple(ptx), has_cuda_source=any(marker in data for marker in _CUDA_C_MARKERS)
    )


def declare_kernels_as_entries(ptx: str, kernels: tuple[str, ...]) -> str:
    """TVM 0.27 marks kernels with nvvm.annotations metadata, which LLVM 20+ ignores (it wants the ptx_kernel calling
    convention), so the wheel's LLVM 22 emits every kernel as a device function, ``.func``. The driver then loads the
    PTX but cannot launch it: cuModuleGetFunction fails with CUDA_ERROR_NOT_FOUND. Declare each as ``.entry`` again.
    The parameter lists and bodies are valid for a kernel as they are; a kernel returns nothing, so a ``.func`` with a
    return value is never touched."""
    for name in kernels:
        ptx = re.sub(rf"^(\.visible\s+)\.func(\s+{re.escape(name)}\s*\()", r"\1.entry\2", ptx, flags=re.M)
    return ptx


def with_kernels_as_entries(blob: bytes) -> bytes:
    """The module blob TVM embeds in a library, with every CUDA module's kernels declared as PTX entries.

    Only the PTX changes; the three lengths around it follow: the PTX's own, its CUDA module's, and the blob's."""
    if len(blob) < 8 or struct.unpack_from("<Q", blob, 0)[0] != len(blob) - 8:
        raise CompilationError("the library's module blob does not start with its own length; cannot fix its PTX")
    out = bytearray(blob)
    at = out.find(_CUDA_KIND)
    while at >= 0:
        module = _read_cuda_module(bytes(out), at)
        if module.format == "ptx":
            text = out[module.code_at : module.code_at + module.code_length].decode("ascii")
            fixed = declare_kernels_as_entries(text, module.kernels).encode("ascii")
            grown = len(fixed) - module.code_length
            out[module.code_at - 8 : module.code_at + module.code_length] = struct.pack("<Q", len(fixed)) + fixed
            for offset in (module.length_at, 0):
                struct.pack_into("<Q", out, offset, struct.unpack_from("<Q", out, offset)[0] + grown)
        at = out.find(_CUDA_KIND, module.length_at)
    return bytes(out)


def pack_imports_with_kernel_entries(module, is_system_lib: bool, prefix: str, workspace_dir: str) -> str:
    """export_library's ``fpack_imports`` for nvptx builds: TVM's own C packing of the imported modules, with the
    blob passed through with_kernels_as_entries. Returns the C file, which the library's linker compiles in."""
    from tvm.runtime import _ffi_api

    source = _ffi_api.ModulePackImportsToC(module, is_system_lib, prefix)
    array = re.search(r"(\w+)\[(\d+)\] = \{\n(.*?)\n\};", source, re.S)
    if array is None:
        raise CompilationError("TVM's packed module source has no byte array; cannot fix its PTX")
    blob = bytes.fromhex("".join(re.findall(r"0x([0-9a-fA-F]{2})", array[3])))
    if len(blob) != int(array[2]):
        raise CompilationError(f"TVM's packed module array holds {len(blob)} bytes, not the {array[2]} it declares")
    fixed = with_kernels_as_entries(blob)
    rows = ",\n".join("  " + ",".join(f"0x{b:02x}" for b in fixed[i : i + 20]) for i in range(0, len(fixed), 20))
    path = os.path.join(workspace_dir, f"{prefix}devc.c")
    with open(path, "w") as f:
        f.write(f"{source[: array.start()]}{array[1]}[{len(fixed)}] = {{\n{rows},\n}};{source[array.end() :]}")
    return path


def check_shipped_gpu_code(library_path: Path, target: Target) -> ShippedGpuCode:
    """Fail the build unless the library carries only PTX for gpu-code, at an ISA the target's cuda-ver loads."""

    code = shipped_gpu_code(library_path)
    where = f"{Path(library_path).name} for {target.name}"
    if code.has_cuda_source or any(fmt != "ptx" for fmt in code.formats):
        raise CompilationError(
            f"{where} carries GPU code other than PTX ({', '.join(code.formats)}); "
            "CUDA C would need NVRTC on the device"
        )
    if not code.ptx or len(code.ptx) != len(code.formats):
        raise CompilationError(f"{where}: found {len(code.formats)} CUDA modules but {len(code.ptx)} PTX texts")
    for module in code.ptx:
        if missing := [k for k in module.kernels if k not in module.entries]:
            raise CompilationError(
                f"{where}: the PTX declares {', '.join(missing[:3])}{' and others' if len(missing) > 3 else ''} as device "
                "functions, not .entry kernels; the CUDA driver could not launch them (CUDA_ERROR_NOT_FOUND)"
            )
        if module.target != target.options.gpu_code:
            raise CompilationError(
                f"{where}: PTX .target {module.target} differs from gpu-code {target.options.gpu_code}"
            )
        if not ptx_isa_allowed(module.version, target.options.cuda_ver):
            bound = target.max_ptx_isa
            raise CompilationError(
                f"{where}: PTX ISA {module.version[0]}.{module.version[1]} is newer than cuda-ver "
                f"{target.options.cuda_ver} accepts ({bound[0]}.{bound[1]})"
            )
    return code
