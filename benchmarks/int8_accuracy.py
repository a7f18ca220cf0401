"""Accuracy of INT8 against fp32 on held-out synthetic sequences, per choice of quantised node types.

The fp32 model (default: the bundled export) is quantised here once per op set (``vknet_model.quantize``,
calibrated on frames of the generator's training seed), then fp32 and each int8 model run the same held-out
sequences (seed 0, sequences 1000+) through the Pipeline, each feeding back its own kernels as the node does.
Reported per model: STQ / AQ / SQ; the share of stride-4 cells whose class and whose panoptic id equal fp32's;
and the share of fp32's tracked things that the int8 model tracks with the same identity (vknet_eval.agreement:
matched by mask IoU >= 0.5, ids compared up to renaming) and with the very same id. The op set shipped
(vknet_model.quantize.QUANTIZED_OP_TYPES) was chosen from this table.

Usage: python benchmarks/int8_accuracy.py [--sequences 10] [--frames 20] [--calib-frames 64]
       [--op-sets Conv Conv,MatMul] [--methods minmax percentile] [--model M.onnx]
       [--json benchmarks/int8_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from vknet_model.machine import describe_cpu


def run(model: Path, op_sets: list[list[str]], sequences: int, frames: int, calib_frames: int,
        methods: list[str]) -> dict[str, Any]:
    from tqdm import tqdm

    from vknet_data.synth import SynthConfig, SyntheticScene
    from vknet_data.synth_stream import TRAIN_SCENE_SEED
    from vknet_eval.agreement import RunAgreement
    from vknet_eval.scoring import PanopticScorer
    from vknet_model.backends import open_backend
    from vknet_model.pipeline import Pipeline
    from vknet_model.quantize import float_ops_left, quantize_model

    work = Path(tempfile.mkdtemp(prefix="vknet_int8_"))
    models = {"fp32": model}
    calib_cfg = SynthConfig(frames=8)
    for ops in op_sets:
        for method in methods:
            name = "int8 " + "+".join(ops) + f" {method}"
            out = work / f"{'_'.join(ops)}_{method}.int8.onnx"
            scenes = [[SyntheticScene(TRAIN_SCENE_SEED, s, calib_cfg).frame(t)[0] for t in range(8)]
                      for s in range((calib_frames + 7) // 8)]
            quantize_model(model, out, scenes, calibration="synthetic training streets", op_types=ops, method=method)
            assert not float_ops_left(out, ops)
            models[name] = out
    cfg = SynthConfig(frames=frames)
    scenes_eval = [SyntheticScene(0, 1000 + i, cfg) for i in range(sequences)]
    results: dict[str, list[Any]] = {}
    scores: dict[str, dict[str, float]] = {}
    for name, path in models.items():
        pipeline = Pipeline(open_backend(path, backend="onnxruntime"))
        scorer = PanopticScorer(pipeline.data, vpq=False)
        runs = results.setdefault(name, [])
        for scene in tqdm(scenes_eval, desc=name, unit="sequence"):
            pipeline.reset(f"sequence {scene.sequence}")
            for t in range(frames):
                image, gt = scene.frame(t)
                result = pipeline.step(image, stamp=0.1 * t, frame_id=str(scene.sequence))
                scorer.add(str(scene.sequence), gt, result.panoptic)
                runs.append(result)
        stq = scorer.result()
        scores[name] = {"STQ": stq["STQ"], "AQ": stq["AQ"], "SQ": stq["SQ"]}
        if name != "fp32":
            agreement = RunAgreement()
            for i, (ref, got) in enumerate(zip(results["fp32"], runs, strict=True)):
                if i % frames == 0:
                    agreement.reset_tracks()
                agreement.add(ref, got)
            scores[name].update(agreement.summary())
            scores[name]["STQ_drop"] = scores["fp32"]["STQ"] - stq["STQ"]
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="fp32 .onnx export (default: the bundled)")
    parser.add_argument("--op-sets", nargs="+", default=["Conv", "Conv,MatMul"],
                        help="node types to quantise, one comma-separated set per int8 model")
    parser.add_argument("--sequences", type=int, default=10)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--calib-frames", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["percentile"], help="calibration methods: percentile, minmax")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/int8_accuracy.json"))
    args = parser.parse_args(argv)
    from vknet_model.bundled import BUNDLED_ONNX

    model = args.model or BUNDLED_ONNX
    scores = run(model, [s.split(",") for s in args.op_sets], args.sequences, args.frames, args.calib_frames,
                 args.methods)
    columns = ("STQ", "STQ_drop", "class_cells_equal_pct", "panoptic_cells_equal_pct", "track_identity_kept_pct",
               "track_ids_equal_pct")
    print(f"\n{'model':18s} " + " ".join(f"{c.removesuffix('_pct'):>24s}" for c in columns))
    for name, row in scores.items():
        print(f"{name:18s} " + " ".join(f"{row.get(c, float('nan')):>24.4f}" for c in columns))
    record = {"cpu": describe_cpu(), "model": str(model), "sequences": args.sequences,
              "frames": args.frames, "calib_frames": args.calib_frames, "methods": args.methods, "scores": scores}
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
