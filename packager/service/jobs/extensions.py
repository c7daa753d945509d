"""Options a packaging job can have that the service API does not: `build`'s way in uses them.

They live in the job record's own column, never in the service-shaped Configuration, and
DescribeModelPackagingJob does not show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packager.build.remote import RemoteDevice

DEFAULT_BENCHMARK_RUNS = 50


@dataclass(frozen=True)
class JobExtensions:
    output_dir: Path | None = None  # where the bundle goes (absolute); None: the job's own greengrass-build
    benchmark_runs: int = DEFAULT_BENCHMARK_RUNS
    device: RemoteDevice | None = None  # run, check and time the model there over TVM RPC
    register: bool = True  # with an S3 output: create the Greengrass component version after upload
    compile_cache_dir: Path | None = None  # None: $PACKAGER_COMPILE_CACHE, else $PACKAGER_HOME/compile-cache
    use_compile_cache: bool = True  # False: compile afresh (build --no-cache)
    max_ratio: float | None = None  # speed gate (build --max-ratio)

    def to_dict(self) -> dict:
        doc: dict = {"BenchmarkRuns": self.benchmark_runs, "Register": self.register}
        if self.compile_cache_dir is not None:
            doc["CompileCache"] = str(self.compile_cache_dir)
        if not self.use_compile_cache:
            doc["NoCache"] = True
        if self.max_ratio is not None:
            doc["MaxRatio"] = self.max_ratio
        if self.output_dir is not None:
            doc["OutputDir"] = str(self.output_dir)
        if self.device is not None:
            doc["Device"] = {"Host": self.device.host, "Port": self.device.port, "Key": self.device.key}
        return doc

    @classmethod
    def from_dict(cls, doc: dict | None) -> JobExtensions:
        """None (a job the service API started) gives the defaults."""
        if doc is None:
            return cls()
        from packager.build.remote import RemoteDevice

        device = doc.get("Device")
        return cls(
            output_dir=Path(doc["OutputDir"]) if "OutputDir" in doc else None,
            benchmark_runs=int(doc["BenchmarkRuns"]),
            register=bool(doc["Register"]),
            compile_cache_dir=Path(doc["CompileCache"]) if "CompileCache" in doc else None,
            use_compile_cache=not doc.get("NoCache", False),
            max_ratio=float(doc["MaxRatio"]) if "MaxRatio" in doc else None,
            device=RemoteDevice(device["Host"], int(device["Port"]), key=device["Key"]) if device else None,
        )
