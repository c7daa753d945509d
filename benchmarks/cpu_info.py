"""What every benchmark records about the CPU: its model, its vector ISA, and the FMA peak the GFLOP/s figures compare to."""

from __future__ import annotations

from targets.cpu import CPUINFO, host_cpu, host_mcpu, vector_isa


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


def peak_gflops(target, threads: int) -> float:
    """float32 FMA peak of ``threads`` cores at the reported clock, for the vector ISA the target compiles for."""
    isa = vector_isa(target.tvm_target)
    return 2.0 * isa.lanes * isa.fma_units * (clock_mhz() or 2000.0) / 1e3 * threads


def engine_isa(target) -> dict:
    """The ISA each engine used: TVM's from its target, ONNX Runtime's and OpenVINO's from the CPU they dispatch on."""
    cpu = host_cpu()
    best = cpu.isa[0] if cpu.isa else "scalar"
    return {
        "tvm": f"{vector_isa(target.tvm_target).name} (mcpu {target.tvm_target.get('mcpu', 'none')})",
        "ort": f"{best} (runtime dispatch on the host CPU)",
        "openvino": f"{best} (runtime dispatch on the host CPU)",
    }
