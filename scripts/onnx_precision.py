"""Measure: how far float32 runs of the NAS-FCOS ONNX test's graph are from its float64 result,
per CPU code path, and where the error comes from.

The model is the one tests/test_onnx_export.py exports (PAPER NAS-FCOS, ResNet-10, 64 channels,
128 px, every parameter perturbed), on the test's batch of 2. Each oneDNN ISA in `--isa` runs in
its own process (ONEDNN_MAX_CPU_ISA caps the convolution kernels PyTorch uses, standing in for a
CPU without AVX-512) and measures, per output:

- `torch32`: PyTorch float32 vs the float64 result of the same weights (max |diff| / max |f64|);
- `ort`, `ort_noopt`: onnxruntime with and without its graph optimisations vs float64;
- `ort-torch32`, `noopt-torch32`: onnxruntime vs PyTorch float32, the former fixed-1e-4 check;

and, per deformable convolution in execution order, the largest offset, the offset's float32 error
and the layer's relative output error against float64 (how the error grows through the network).
The first process also scales every DCN's offset convolution by `--offset-scales` and reports
PyTorch float32's error level against float64 for each (the error grows with the offsets).

Prints markdown tables, writes JSON and a PNG (error level vs offset scale) to --out.

    python scripts/onnx_precision.py --out runs/onnx-precision
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test's own model and checkpoint

OUTPUTS = ("cls_logits", "bbox_reg", "centerness")


def test_model(work: Path) -> tuple[Path, Path, Any]:
    from test_onnx_export import detector_config, trained_looking_checkpoint

    model = {"type": "fcos", "neck": {"type": "nasfcos", "out_channels": 64}, "genotype": "PAPER"}
    config = detector_config(work, model, 128)
    checkpoint, detector = trained_looking_checkpoint(config, work)
    for module in detector.modules():
        if hasattr(module, "use_torchvision"):
            module.use_torchvision = False
    return config, checkpoint, detector


def rel(got: Any, want: Any) -> float:
    """max |got - want| / max |want| (`onnx_check.output_errors`)."""
    from nassearch.onnx_check import output_errors

    return output_errors([got], [want], ["output"])[0].rel


def measure(graph: Path, work: Path, offset_scales: list[float]) -> dict[str, Any]:
    """One process's measurements (see the module docstring)."""
    import torch

    from nassearch.detectors.ops.deform_conv import ModulatedDeformConv2d
    from nassearch.onnx_check import run_onnx
    from nassearch.onnx_export import RawHeadOutputs, output_names

    torch.set_num_threads(1)
    _, _, detector = test_model(work)
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(11))
    detector64 = copy.deepcopy(detector).double()

    captured: dict[str, dict[str, list[Any]]] = {"32": {}, "64": {}}

    def hook(tag: str, name: str) -> Any:
        def record(module: Any, inputs: Any, output: Any) -> None:
            offset, _ = module.offset_and_mask(inputs[0])
            captured[tag].setdefault(name, []).append((offset.double(), output.double()))

        return record

    for tag, model in (("32", detector), ("64", detector64)):
        for name, module in model.named_modules():
            if isinstance(module, ModulatedDeformConv2d):
                module.register_forward_hook(hook(tag, name))
    with torch.no_grad():
        t32 = RawHeadOutputs(detector)(images)
        t64 = RawHeadOutputs(detector64)(images.double())
    ort = run_onnx(graph, images.numpy())
    noopt = run_onnx(graph, images.numpy(), optimize=False)
    names = output_names("fcos")
    outputs = {
        name: {
            "torch32": rel(a, d),
            "ort": rel(o, d),
            "ort_noopt": rel(n, d),
            "ort-torch32": rel(o, a),
            "noopt-torch32": rel(n, a),
        }
        for name, a, d, o, n in zip(names, t32, t64, ort, noopt, strict=True)
    }
    layers = []
    for name, calls in captured["32"].items():
        for call, ((off32, out32), (off64, out64)) in enumerate(
            zip(calls, captured["64"][name], strict=True)
        ):
            layers.append(
                {
                    "layer": name if len(calls) == 1 else f"{name} (level {call})",
                    "max_offset_px": float(off64.abs().max()),
                    "offset_error_px": float((off32 - off64).abs().max()),
                    "output_rel_error": rel(out32, out64),
                }
            )

    sweep = []
    for scale in offset_scales:
        scaled32, scaled64 = copy.deepcopy(detector), copy.deepcopy(detector64)
        for model in (scaled32, scaled64):
            for module in model.modules():
                if isinstance(module, ModulatedDeformConv2d):
                    module.conv_offset.weight.data.mul_(scale)
                    module.conv_offset.bias.data.mul_(scale)
        with torch.no_grad():
            a = RawHeadOutputs(scaled32)(images)
            d = RawHeadOutputs(scaled64)(images.double())
        sweep.append({"offset_scale": scale, "torch32_level": max(map(rel, a, d))})
    return {"outputs": outputs, "layers": layers, "offset_sweep": sweep}


def worker(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as work:
        result = measure(Path(args.graph), Path(work), args.offset_scales)
    print(json.dumps(result))


def export_graph(out: Path) -> Path:
    from nassearch.cli import main as cli

    graph = out / "nasfcos-test.onnx"
    work = out / "model"
    work.mkdir(exist_ok=True)
    config, checkpoint, _ = test_model(work)
    if cli(["export-onnx", str(config), "--checkpoint", str(checkpoint), "--out", str(graph)]):
        raise SystemExit("export failed")
    return graph


def table(results: dict[str, Any]) -> str:
    lines = [
        "| oneDNN ISA | output | torch32 vs f64 | ort vs f64 | ort (no opt) vs f64 | ort vs torch32 | no-opt vs torch32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for isa, result in results.items():
        level = max(v["torch32"] for v in result["outputs"].values())
        for name, v in result["outputs"].items():
            if v["torch32"] < 0.1 * level and v["ort-torch32"] < 1e-5:
                continue  # P6/P7 outputs: well below the rest
            lines.append(
                f"| {isa} | {name} | {v['torch32']:.2e} | {v['ort']:.2e} | {v['ort_noopt']:.2e} "
                f"| {v['ort-torch32']:.2e} | {v['noopt-torch32']:.2e} |"
            )
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    lines = [
        "| oneDNN ISA | torch32 level L | max ort vs f64 | max ratio ort/L | max ort vs torch32 |",
        "|---|---|---|---|---|",
    ]
    for isa, result in results.items():
        values = result["outputs"].values()
        level = max(v["torch32"] for v in values)
        ort = max(max(v["ort"], v["ort_noopt"]) for v in values)
        cross = max(max(v["ort-torch32"], v["noopt-torch32"]) for v in values)
        lines.append(f"| {isa} | {level:.2e} | {ort:.2e} | {ort / level:.2f} | {cross:.2e} |")
    return "\n".join(lines)


def layer_table(result: dict[str, Any]) -> str:
    lines = [
        "| DCN layer | max offset (px) | offset error (px) | output rel. error vs f64 |",
        "|---|---|---|---|",
    ]
    for layer in result["layers"]:
        lines.append(
            f"| {layer['layer']} | {layer['max_offset_px']:.1f} | {layer['offset_error_px']:.1e} "
            f"| {layer['output_rel_error']:.1e} |"
        )
    return "\n".join(lines)


def plot(sweep: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [s for s in sweep if s["offset_scale"] > 0]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(
        [s["offset_scale"] for s in points],
        [s["torch32_level"] for s in points],
        "o-",
        label="PyTorch float32",
    )
    zero = [s for s in sweep if s["offset_scale"] == 0]
    if zero:
        ax.axhline(zero[0]["torch32_level"], ls="--", c="gray", label="offsets 0 (a plain conv)")
    ax.axhline(1e-4, ls=":", c="red", label="former fixed bound 1e-4")
    ax.set_xlabel("offset convolution scale (1 = the test's checkpoint)")
    ax.set_ylabel("max rel. error vs float64")
    ax.set_title("NAS-FCOS ONNX test graph: float32 error vs DCN offsets", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/onnx-precision"))
    parser.add_argument("--isa", nargs="+", default=["default", "AVX2", "AVX512_CORE"])
    parser.add_argument("--offset-scales", nargs="+", type=float, default=[0, 0.01, 0.1, 0.3, 1])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--graph", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    graph = export_graph(args.out)
    results = {}
    for i, isa in enumerate(args.isa):
        env = dict(os.environ)
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if isa != "default":
            env["ONEDNN_MAX_CPU_ISA"] = isa
        scales = args.offset_scales if i == 0 else []
        command = [sys.executable, __file__, "--worker", "--graph", str(graph), "--offset-scales"]
        done = subprocess.run(
            [*command, *map(str, scales)] if scales else command[:-1],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results[isa] = json.loads(done.stdout.strip().splitlines()[-1])
    first = results[args.isa[0]]
    report = {
        "machine": {"cpu": _cpu_model(), "python": platform.python_version()},
        "results": results,
    }
    (args.out / "onnx_precision.json").write_text(json.dumps(report, indent=2))
    plot(first["offset_sweep"], args.out / "onnx_precision.png")
    print(f"CPU: {report['machine']['cpu']}\n")
    print(summary(results), "\n")
    print(table(results), "\n")
    print(f"Per DCN layer (oneDNN {args.isa[0]}):\n")
    print(layer_table(first), "\n")
    print("| offset scale | torch32 level vs f64 |\n|---|---|")
    for s in first["offset_sweep"]:
        print(f"| {s['offset_scale']:g} | {s['torch32_level']:.2e} |")
    print(f"\nwrote {args.out / 'onnx_precision.json'} and {args.out / 'onnx_precision.png'}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
