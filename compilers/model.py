"""The data that flows between the compile stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from compilers.frontends.spec import ModelSpec


@dataclass(frozen=True)
class ImportedModel:
    """A model that passed intake: an ONNX graph we can compile, plus its spec.

    Every frontend (ONNX, PyTorch, anomalib) ends in ONNX bytes, so compile,
    the ONNX Runtime check and the benchmark share one reference.
    """

    source_path: Path  # what the user gave us
    onnx_bytes: bytes  # the graph, shapes fixed, as compiled
    spec: ModelSpec
    sha256: str  # of onnx_bytes
    opset: int
    frontend: str  # "onnx" | "pytorch" | "anomalib"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.spec.input.shape

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.spec.outputs)


@dataclass(frozen=True)
class CompileOptions:
    """How to compile, separate from where to (the Target)."""

    work_dir: Path
    tuning_trials: int = 0
    tuning_cache_dir: Path | None = None  # None: no tuning records are read or written
    compile_cache_dir: Path | None = None  # None: compile every time (compilers/compile_cache.py)
    tuning_progress: bool = True
    rtol: float = 1e-3
    atol: float = 1e-4
    # Winograd with its smallest tiles only (compilers/schedules/winograd.py): less rounding, a little slower. The build
    # compiles so when the fast compile fails its check against ONNX Runtime.
    precise: bool = False


@dataclass(frozen=True)
class CompiledArtifact:
    """What compile_model() leaves in a directory, ready to bundle.

    ``model_dir`` holds ``model.so`` (the Relax VM executable), ``params.bin``
    (tvm.runtime.save_param_dict of the weights, passed after the input) and
    ``manifest.json`` (what the edge runtime needs to call it).
    """

    model_dir: Path
    target_name: str
    device: str  # "cpu" | "cuda"
    library_path: Path
    params_path: Path
    manifest_path: Path
    compile_seconds: float
    tuning_trials: int  # trials run for this build (0 for a cache hit or untuned)
    tuning_records_applied: int
    from_cache: bool = False  # True when the compile cache supplied model_dir's files
    # SHA-256 (hex) of model_dir's files by name, as the compile cache checked them on a hit; {} when not known.
    file_sha256: dict = field(default_factory=dict)
    cache_key: object | None = None  # compile_cache.CacheKey of the entry this came from or went to; None: not cached
    # On a compile cache hit for a compile that failed the build check: that check's error, and model_dir holds nothing.
    failed_check: str | None = None
