"""What every benchmark records about the CPU: its model, its vector ISA, and the FMA peak the GFLOP/s figures compare to."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

from targets.cpu import CPUINFO, host_cpu, host_mcpu, vector_isa

PROBE = Path(__file__).with_name("fma_peak.c")


def cpu_description() -> dict:
    cpu = host_cpu()
    return {"model": cpu.model, "isa": list(cpu.isa), "llvm_mcpu": host_mcpu(cpu), "clock_mhz": clock_mhz()}


def clock_mhz() -> float | None:
    """The clock /proc/cpuinfo reports (under a hypervisor, the nominal one)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def fma_peak(target, threads: int) -> tuple[float, str]:
    """(GFLOP/s, how it was found): the float32 FMA peak of ``threads`` cores, measured on this machine (fma_peak.c)
    where a C compiler is at hand, else from the reported clock and the target's vector ISA. Under a hypervisor the
    reported clock is the nominal one, below the boost the cores run at, so that estimate put kernels above 100%."""
    measured = measured_peak_gflops(threads)
    if measured is not None:
        return measured, "measured by benchmarks/fma_peak.c"
    isa = vector_isa(target.tvm_target)
    return 2.0 * isa.lanes * isa.fma_units * (clock_mhz() or 2000.0) / 1e3 * threads, "from the nominal clock"


@functools.cache
def measured_peak_gflops(threads: int) -> float | None:
    """GFLOP/s of ``threads`` threads running independent vector FMA chains in registers; None without a compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "fma_peak"
        flags = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"]
        try:
            subprocess.run([compiler, *flags, str(PROBE), "-o", str(binary)], check=True, capture_output=True)
            out = subprocess.run([str(binary), str(threads)], check=True, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return None
    return float(out.stdout.split()[0])


def engine_isa(target) -> dict:
    """The ISA each engine used: TVM's from its target, ONNX Runtime's and OpenVINO's from the CPU they dispatch on."""
    cpu = host_cpu()
    best = cpu.isa[0] if cpu.isa else "scalar"
    return {
        "tvm": f"{vector_isa(target.tvm_target).name} (mcpu {target.tvm_target.get('mcpu', 'none')})",
        "ort": f"{best} (runtime dispatch on the host CPU)",
        "openvino": f"{best} (runtime dispatch on the host CPU)",
    }
