"""The build-time accuracy check: any Runner (here or on a device) against ONNX Runtime on the same random input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compilers.frontends.spec import OutputRole
from compilers.model import CompileOptions, ImportedModel
from compilers.runners import OnnxRuntimeRunner, Runner
from packager.errors import AccuracyMismatchError


@dataclass(frozen=True)
class OutputComparison:
    name: str
    max_abs_error: float
    max_rel_error: float
    within_tolerance: bool


def random_input(imported: ImportedModel, seed: int = 0) -> np.ndarray:
    """Values in 0..1, the range a preprocessed image has."""
    return np.random.default_rng(seed).random(imported.input_shape, dtype=np.float32)


def graph_output_names(imported: ImportedModel) -> list[str]:
    import onnx

    return [o.name for o in onnx.load_from_string(imported.onnx_bytes).graph.output]


# A bool output may differ from ONNX Runtime's only where the float it thresholds lies this close to the threshold:
# 1e-5, or the float check's own tolerance at the threshold when wider (a float that may differ by atol + rtol * |t|
# from ORT's may land on the other side of t; Reverse Distillation's blurred map flips 20 of 65536 pixels so).
BOOL_THRESHOLD_MARGIN = 1e-5


def thresholded_outputs(imported: ImportedModel) -> dict[str, tuple[str, float]]:
    """bool output -> (the float output it thresholds, the threshold), for graphs that threshold their own scores
    (anomalib v2: pred_label = pred_score > 0.5, pred_mask = anomaly_map > 0.5)."""
    spec = imported.spec
    pairs = {}
    for verdict, source, threshold in (
        (OutputRole.LABEL, OutputRole.SCORE, spec.image_threshold),
        (OutputRole.MASK, OutputRole.ANOMALY_MAP, spec.pixel_threshold),
    ):
        if spec.output(verdict) is not None and spec.output(source) is not None:
            pairs[spec.output(verdict).name] = (spec.output(source).name, float(threshold))
    return pairs


def _bool_mismatches(
    got: np.ndarray,
    want: np.ndarray,
    expected: dict[str, np.ndarray],
    pair: tuple[str, float] | None,
    rtol: float,
    atol: float,
) -> int:
    """Elements where two bool outputs differ and the difference is not excused by a float at the threshold."""
    differ = np.asarray(got) != np.asarray(want)
    if pair is not None and pair[0] in expected and expected[pair[0]].shape == want.shape:
        source, threshold = pair
        margin = max(BOOL_THRESHOLD_MARGIN, atol + rtol * abs(threshold))
        differ &= np.abs(expected[source].astype(np.float64) - threshold) > margin
    return int(differ.sum())


def compare_outputs(
    actual: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    rtol: float,
    atol: float,
    thresholded: dict[str, tuple[str, float]] | None = None,
) -> list[OutputComparison]:
    """Floats within rtol/atol; bools equal, except where the float they threshold is that close to the threshold."""
    results = []
    for name, want in expected.items():
        got = actual[name]
        if got.shape != want.shape:
            raise AccuracyMismatchError(
                f"output '{name}': compiled shape {list(got.shape)} differs from ONNX Runtime's {list(want.shape)}"
            )
        if want.dtype == np.bool_ or got.dtype == np.bool_:
            wrong = _bool_mismatches(got, want, expected, (thresholded or {}).get(name), rtol, atol)
            results.append(
                OutputComparison(
                    name=name,
                    max_abs_error=float(wrong),
                    max_rel_error=wrong / max(want.size, 1),
                    within_tolerance=wrong == 0,
                )
            )
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        finite = np.isfinite(got).all()
        results.append(
            OutputComparison(
                name=name,
                max_abs_error=float(diff.max()) if diff.size else 0.0,
                max_rel_error=float((diff / np.maximum(np.abs(want), 1e-12)).max()) if diff.size else 0.0,
                within_tolerance=bool(finite and np.allclose(got, want, rtol=rtol, atol=atol)),
            )
        )
    return results


def assert_matches_onnxruntime(
    actual: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    rtol: float,
    atol: float,
    where: str = "compiled model",
    thresholded: dict[str, tuple[str, float]] | None = None,
) -> list[OutputComparison]:
    """Fail the build on the first output outside rtol/atol, naming it and its max error."""
    results = compare_outputs(actual, expected, rtol, atol, thresholded)
    for r in results:
        if not r.within_tolerance and (expected[r.name].dtype == np.bool_ or actual[r.name].dtype == np.bool_):
            raise AccuracyMismatchError(
                f"{where} disagrees with ONNX Runtime on bool output '{r.name}' at {int(r.max_abs_error)} of "
                f"{expected[r.name].size} elements away from the threshold"
            )
        if not r.within_tolerance:
            raise AccuracyMismatchError(
                f"{where} disagrees with ONNX Runtime on output '{r.name}': max abs error {r.max_abs_error:.3g}, "
                f"max rel error {r.max_rel_error:.3g} (tolerance rtol={rtol:g}, atol={atol:g})"
            )
    return results


# Winograd's larger tiles round more than its smallest, and by an amount that varies from input to input: Reverse
# Distillation's default compile used 77% of the tolerance on the check's input and 353% on another random image, its
# precise compile 42% and 98%. So a compile that may use them is held to this share of the tolerance, and one that
# does not reach it is compiled again precisely (packager.build.pipeline), which is held to the whole.
FAST_COMPILE_SHARE = 0.5


def check_tolerance(options: CompileOptions) -> tuple[float, float]:
    """(rtol, atol) the build check holds a compile to: the whole tolerance for a precise compile, else its share."""
    share = 1.0 if options.precise else FAST_COMPILE_SHARE
    return options.rtol * share, options.atol * share


def check_against_onnxruntime(
    runner: Runner, imported: ImportedModel, options: CompileOptions, reference: Runner | None = None
) -> dict[str, float]:
    """Run ``runner`` and ONNX Runtime (``reference``, or a new session) on one random input; fail the build on a
    mismatch past check_tolerance, naming where the model ran. Returns output name -> max abs error."""
    x = random_input(imported)
    rtol, atol = check_tolerance(options)
    results = assert_matches_onnxruntime(
        runner.run(x),
        (reference or OnnxRuntimeRunner.load(imported)).run(x),
        rtol,
        atol,
        where=f"compiled model on {runner.label}",
        thresholded=thresholded_outputs(imported),
    )
    return {r.name: r.max_abs_error for r in results}
