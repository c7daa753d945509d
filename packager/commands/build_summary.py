"""build's results for machines: `--summary-json FILE|-`, and the text table of a several-target build.

One document whatever happened: SUCCEEDED with the component and a row per target, or FAILED with the error's
code, message and the exit code build returns.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

SUMMARY_FORMAT = "packager-build-summary/1"


@dataclass(frozen=True)
class TargetRow:
    """One target's line of a build's results."""

    target: str
    platform: str  # os/architecture, the recipe manifest it is in
    artifact: Path
    artifact_size: int
    digest: str  # Greengrass Digest: base64 SHA-256
    report_path: Path | None
    benchmark: object  # packager.build.benchmark.BenchmarkReport
    max_abs_error: dict
    compile_seconds: float
    from_cache: bool
    build_seconds: float

    def to_dict(self) -> dict:
        report = self.benchmark
        return {
            "target": self.target,
            "platform": self.platform,
            "artifact": str(self.artifact),
            "artifact_size": self.artifact_size,
            "digest": self.digest,
            "report": str(self.report_path) if self.report_path else None,
            "tvm_p50_ms": report.tvm.p50_ms if report.tvm else None,
            "tvm_device": report.device,
            "emulated": report.emulated,
            "onnxruntime_p50_ms": report.onnxruntime.p50_ms if report.onnxruntime else None,
            "benchmark_runs": report.onnxruntime.runs if report.onnxruntime else 0,
            "threads": report.threads,
            "ratio_tvm_to_ort": report.ratio_tvm_to_ort,
            "ratio_not_measured": report.ratio_not_measured if report.ratio_tvm_to_ort is None else None,
            "max_abs_error": self.max_abs_error,
            "compile_cache": "hit" if self.from_cache else "miss",
            "compile_seconds": round(self.compile_seconds, 3),
            "build_seconds": round(self.build_seconds, 3),
        }


def row_from_job(result, platform: str, artifact=None, report_path: Path | None = None) -> TargetRow:
    """result: packager.service.jobs.results.JobResult; ``artifact`` (a BundleArtifact) when the component's file is not the job's."""
    return TargetRow(
        target=result.benchmark.target,
        platform=platform,
        artifact=Path(artifact.path) if artifact else result.artifact_path,
        artifact_size=artifact.size if artifact else result.artifact_size,
        digest=artifact.sha256_b64 if artifact else result.artifact_sha256_b64,
        report_path=report_path if artifact else result.report_path,
        benchmark=result.benchmark,
        max_abs_error=result.max_abs_error,
        compile_seconds=result.compile_seconds,
        from_cache=result.from_cache,
        build_seconds=result.wall_seconds,
    )


def succeeded_document(
    component: str,
    version: str,
    recipe: Path,
    rows: list[TargetRow],
    arn: str | None,
    wall_seconds: float,
    max_ratio: float | None,
) -> dict:
    return {
        "format": SUMMARY_FORMAT,
        "status": "SUCCEEDED",
        "exit_code": 0,
        "component": component,
        "version": version,
        "recipe": str(recipe),
        "registered": arn,
        "max_ratio": max_ratio,
        "targets": [r.to_dict() for r in rows],
        "build_seconds": round(wall_seconds, 3),
    }


def failed_document(error, max_ratio: float | None) -> dict:
    """error: a packager.errors.PackagerError."""
    return {
        "format": SUMMARY_FORMAT,
        "status": "FAILED",
        "exit_code": error.exit_code,
        "max_ratio": max_ratio,
        "error": {"code": error.code, "type": type(error).__name__, "message": error.message},
    }


def write_summary_json(doc: dict, destination: str) -> None:
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if destination == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        Path(destination).write_text(text)


def shown(path: Path) -> Path:
    """Relative to the working directory when under it, as the default ./greengrass-build reads best."""
    try:
        return Path(path).relative_to(Path.cwd())
    except ValueError:
        return Path(path)


def print_fleet_summary(
    component: str, version: str, recipe: Path, rows: list[TargetRow], arn: str | None, wall_seconds: float, out=None
) -> None:
    """The header lines of the one-target summary, then a row per target."""
    out = out or sys.stdout
    lines = [f"component:   {component} {version}", f"recipe:      {shown(recipe)}"]
    header = (
        "target",
        "platform",
        "artifact",
        "digest (SHA-256)",
        "TVM p50",
        "ORT p50",
        "TVM/ORT",
        "max error",
        "compile",
        "build",
    )
    table = [header]
    for row in rows:
        report = row.benchmark
        tvm = f"{report.tvm.p50_ms:.3f} ms{' (emulated)' if report.emulated else ''}" if report.tvm else "not measured"
        table.append(
            (
                row.target,
                row.platform,
                str(shown(row.artifact)),
                row.digest,
                tvm,
                f"{report.onnxruntime.p50_ms:.3f} ms" if report.onnxruntime else "not measured",
                report.ratio_text,
                f"{max(row.max_abs_error.values()):.2e}" if row.max_abs_error else "not checked",
                "cached" if row.from_cache else f"{row.compile_seconds:.1f} s",
                f"{row.build_seconds:.1f} s",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.append(f"build time:  {wall_seconds:.1f} s")
    if arn:
        lines.append(f"registered:  {arn}")
    print("\n".join(lines), file=out)
