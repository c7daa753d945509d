"""What a SUCCEEDED job leaves beside its log (result.json): enough to report the build without rerunning anything."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import packager.errors as errors
from packager.build.benchmark import BenchmarkReport, LatencyStats
from packager.service.jobs.store import open_store

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class JobResult:
    component_name: str
    component_version: str
    recipe_path: Path
    artifact_path: Path  # the model's ZIP
    artifact_size: int
    artifact_sha256_b64: str  # as in the recipe's Digest
    benchmark: BenchmarkReport
    component_version_arn: str | None
    wall_seconds: float
    report_path: Path | None = None  # the benchmark report beside the artifact
    max_abs_error: dict = field(default_factory=dict)  # output name -> max |TVM - ORT| of the build's check
    compile_seconds: float = 0.0
    from_cache: bool = False  # the compile cache supplied the compiled model

    @classmethod
    def from_packaging_result(cls, result) -> JobResult:
        """From packager.build.pipeline.PackagingResult."""
        bundle, artifact = result.bundle, result.bundle.artifacts[0]
        return cls(
            component_name=bundle.component_name,
            component_version=bundle.component_version,
            recipe_path=Path(bundle.recipe_path).absolute(),
            artifact_path=Path(artifact.path).absolute(),
            artifact_size=artifact.size,
            artifact_sha256_b64=artifact.sha256_b64,
            benchmark=result.benchmark,
            component_version_arn=result.component_version_arn,
            wall_seconds=result.wall_seconds,
            report_path=Path(bundle.reports[0]).absolute() if bundle.reports else None,
            max_abs_error=dict(result.max_abs_error),
            compile_seconds=result.compile_seconds,
            from_cache=result.from_cache,
        )

    def to_json(self) -> str:
        doc = asdict(self)
        doc["recipe_path"], doc["artifact_path"] = str(self.recipe_path), str(self.artifact_path)
        doc["report_path"] = str(self.report_path) if self.report_path else None
        doc["benchmark"]["input_shape"] = list(self.benchmark.input_shape)
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> JobResult:
        doc = json.loads(text)
        report = doc["benchmark"]
        benchmark = BenchmarkReport(
            **{
                **report,
                "input_shape": tuple(report["input_shape"]),
                "onnxruntime": LatencyStats(**report["onnxruntime"]) if report["onnxruntime"] is not None else None,
                "tvm": LatencyStats(**report["tvm"]) if report["tvm"] is not None else None,
            }
        )
        return cls(
            **{
                **doc,
                "recipe_path": Path(doc["recipe_path"]),
                "artifact_path": Path(doc["artifact_path"]),
                "report_path": Path(doc["report_path"]) if doc.get("report_path") else None,
                "benchmark": benchmark,
            }
        )


def write_result(directory: Path, result: JobResult) -> None:
    """Atomically, so a reader that sees SUCCEEDED and then the file never reads half of it."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{RESULT_FILE}.{os.getpid()}"
    partial.write_text(result.to_json())
    os.replace(partial, directory / RESULT_FILE)


def read_result(directory: Path) -> JobResult | None:
    """None when the job left no result (it failed, or ran before results were written)."""
    try:
        return JobResult.from_json((directory / RESULT_FILE).read_text())
    except FileNotFoundError:
        return None


def job_failure(home: Path, project: str, job_name: str):
    """The error a FAILED job ended with, as the packager.errors class its worker caught, so the CLI exits with its code.
    A job that died without one (killed worker, internal error) gives a plain PackagerError."""
    store = open_store(home)
    try:
        job = store.job(project, job_name)
    finally:
        store.close()
    message = (job.status_message if job else None) or f"job {job_name} FAILED"
    error_class = getattr(errors, job.error_type or "", None) if job else None
    if not (isinstance(error_class, type) and issubclass(error_class, errors.PackagerError)):
        error_class = errors.PackagerError
    return error_class(message)
