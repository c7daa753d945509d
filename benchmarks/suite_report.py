"""Write the suite's results: JSON (everything), a Markdown table and a PNG bar plot of latency per engine."""

from __future__ import annotations

import json
from pathlib import Path

ENGINE_LABELS = {
    "tvm_default": "TVM untuned (default schedules)",
    "tvm_tuned": "TVM tuned",
    "ort": "ONNX Runtime",
    "openvino": "OpenVINO (CPU, latency, f32)",
    "torch": "PyTorch eager",
}
ORDER = ("tvm_default", "tvm_tuned", "ort", "openvino", "torch")


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# TVM vs ONNX Runtime vs PyTorch on CPU",
        "",
        f"Measured {results['finished']} on {env['cpu']} ({env['cpu_count']} CPUs), {results['threads']} threads for every "
        f"engine, batch 1, one process. Load average at start {env['load_start']}, at end {env['load_end']} "
        "(the machine is shared; every engine is sampled in the same rotating rounds, so load falls on all alike).",
        f"Command: `{results['command']}`",
        *(
            [
                f"ISA: CPU {', '.join(results['isa']['cpu']['isa'])}; TVM {results['isa']['engines']['tvm']}; "
                f"ONNX Runtime {results['isa']['engines']['ort']}."
            ]
            if "isa" in results
            else []
        ),
        "",
        "| model | engine | median ms | p90 ms | min ms | vs ORT (median) | vs ORT (min) | compile s | tuning s | trials | max abs err vs ORT |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in results["models"]:
        for name in ORDER:
            e = model["engines"].get(name)
            if e is None:
                continue
            err = model["max_abs_error"].get(name)
            lines.append(
                f"| {model['name']} | {ENGINE_LABELS[name]} | {e['median_ms']:.2f} | {e['p90_ms']:.2f} | {e['min_ms']:.2f} | "
                f"{model['ratio_to_ort'][name]:.2f} | {model['ratio_to_ort_min'][name]:.2f} | {e['prepare_s']:.1f} | "
                f"{e['tuning_s']:.0f} | {e['trials']} | "
                f"{'' if err is None else f'{err:.1e}'} |"
            )
    lines += [
        "",
        "Ratios are latency divided by ONNX Runtime's in the same run (lower is faster): by median, the goal's measure, "
        "and by minimum, the best call each engine managed, which other processes' load disturbs least.",
        "Tuning: MetaSchedule over the schedule templates' decisions, measured in-process "
        f"(budget per model: {results['trials_budget']}); trials column counts trials run in this run.",
        "",
    ]
    for model in results["models"]:
        lines.append(
            f"- **{model['name']}**: {model['description']}, input {model['input_shape']}, "
            f"{model['gflop']:.2f} GFLOP per image (TVM's count)."
        )
    lines += ["", "ISA each engine used (CPU: " + env["cpu"] + (f", {env['isa']}" if "isa" in env else "") + "):", ""]
    for name in ORDER:
        isa = next((m["engines"][name].get("isa") for m in results["models"] if name in m["engines"]), None)
        if isa:
            lines.append(f"- {ENGINE_LABELS[name]}: {isa}")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4.2), squeeze=False)
    colors = {
        "tvm_default": "#9ecae1",
        "tvm_tuned": "#08519c",
        "ort": "#fd8d3c",
        "openvino": "#9e9ac8",
        "torch": "#74c476",
    }
    for ax, model in zip(axes[0], models):
        names = [n for n in ORDER if n in model["engines"]]
        medians = [model["engines"][n]["median_ms"] for n in names]
        p90 = [model["engines"][n]["p90_ms"] for n in names]
        x = np.arange(len(names))
        ax.bar(x, medians, color=[colors[n] for n in names])
        ax.errorbar(
            x,
            medians,
            yerr=[np.zeros(len(names)), np.subtract(p90, medians)],
            fmt="none",
            ecolor="black",
            capsize=3,
            linewidth=1,
        )
        for xi, n, m in zip(x, names, medians):
            ax.text(xi, m, f"{model['ratio_to_ort'][n]:.2f}x", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(
            x, [ENGINE_LABELS[n].replace(" (default schedules)", "").replace(" ", "\n", 1) for n in names], fontsize=8
        )
        ax.set_title(model["name"], fontsize=10)
        ax.set_ylabel("median latency, ms (bar: p90)")
        ax.set_yscale("log")
    fig.suptitle(f"batch 1, {results['threads']} threads; label: ratio to ONNX Runtime", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict, directory: Path, stem: str = "suite") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.json", directory / f"{stem}.md", directory / f"{stem}.png"]
    paths[0].write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    paths[1].write_text(markdown(results))
    plot(results, paths[2])
    return paths
