"""Score models on the four synthetic sets that every choice of the bundled weights is reported on.

Ten held-out sequences cannot tell two models apart: per-sequence STQ moves by up to 0.1 between weights
that are the same model within noise, and a 0.01 lead swaps sign from one seed to the next. So candidates
are scored on four sets of four generator seeds, 70 sequences of 30 frames (``vknet_eval.synthetic_sets``),
none of which any training run sees (training streets come from generator seed 1000). Each set is generated
under ``--root`` the first time (``vknet synth``; about 4 s a sequence) and reused after. Every model runs
with its own inference settings (the config inside the checkpoint or contract), so a row is what a user of
that file gets.

"mean" is the sets' STQ weighted by their sequence counts: each set's STQ pools its own sequences (deeplab2's
STQ is not a per-sequence mean), so this is not STQ pooled over all 70, only a steadier figure to rank by.

Usage: python benchmarks/score_sets.py [--models M ...] [--root /tmp/vk/sets] [--sets tuning held-out ...]
       [--backend auto] [--json benchmarks/score_sets.json]
About 7 minutes a model for all four sets on a 2-core CPU (PyTorch backend, 2100 frames at 384x1248).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from vknet_eval.synthetic_sets import FRAMES, SETS, SPLIT, SynthSet, ensure_set
from vknet_model.machine import describe_cpu


def weighted_mean(scores: dict[str, float], counts: dict[str, int]) -> float:
    """The sets' scores weighted by their sequence counts."""
    return sum(scores[name] * counts[name] for name in scores) / sum(counts[name] for name in scores)


def score_model(model: Path, folders: dict[str, Path], backend: str) -> dict[str, dict[str, float]]:
    """STQ, AQ and SQ of ``model`` (its own inference settings) on each set."""
    from vknet_data.datasets import kitti_step_sequences
    from vknet_eval.evaluate import evaluate_stq
    from vknet_model.pipeline import Pipeline

    pipeline = Pipeline.from_model(model, backend=backend)
    scores = {}
    for name, folder in folders.items():
        sequences = kitti_step_sequences(folder, SPLIT, pipeline.data.label_divisor)
        result = evaluate_stq(pipeline, sequences, pipeline.data)
        scores[name] = {k: round(float(result[k]), 4) for k in ("STQ", "AQ", "SQ")}
    return scores


def run(models: list[Path], root: Path, sets: dict[str, SynthSet], *, frames: int = FRAMES, backend: str = "auto",
        progress: bool = True) -> dict[str, Any]:
    folders = {name: ensure_set(root / name, spec, frames, progress) for name, spec in sets.items()}
    counts = {name: spec.count for name, spec in sets.items()}
    rows = []
    for model in models:
        start = time.perf_counter()
        scores = score_model(model, folders, backend)
        mean = weighted_mean({name: s["STQ"] for name, s in scores.items()}, counts)
        rows.append({"model": str(model), "sets": scores, "mean_STQ": round(mean, 4),
                     "seconds": round(time.perf_counter() - start, 1)})
        if progress:
            print(_row(rows[-1], list(sets)), flush=True)
    return {"sets": {name: {"seed": s.seed, "first_sequence": s.first, "sequences": s.count, "frames": frames,
                            "folder": str(folders[name])} for name, s in sets.items()},
            "backend": backend, "rows": rows, "cpu": describe_cpu(), "date": time.strftime("%Y-%m-%d")}


def _header(names: list[str]) -> str:
    return f"{'model':<44}" + "".join(f"{n:>10}" for n in names) + f"{'mean':>10}"


def _row(row: dict[str, Any], names: list[str]) -> str:
    # The path as given: two runs' model.pt files must not print alike.
    return (f"{row['model']:<44}" + "".join(f"{row['sets'][n]['STQ']:10.4f}" for n in names)
            + f"{row['mean_STQ']:10.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, nargs="+", help="checkpoints (.pt) or exports (.onnx) to score "
                        "(default: the bundled checkpoint)")
    parser.add_argument("--root", type=Path, default=Path("/tmp/vk/sets"),
                        help="where the sets live, one folder each; missing ones are generated (default /tmp/vk/sets)")
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS),
                        help="which sets (default: all four)")
    parser.add_argument("--backend", default="auto",
                        help="backend for every model (default auto: PyTorch for .pt, ONNX Runtime for .onnx)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/score_sets.json"))
    args = parser.parse_args()

    from vknet_model.bundled import resolve_model

    try:
        models = [resolve_model(m) for m in args.models] if args.models else [resolve_model(None)]
    except FileNotFoundError as exc:
        parser.error(str(exc))
    sets = {name: SETS[name] for name in args.sets}
    print(f"STQ on {', '.join(f'{n} (seed {s.seed}, {s.count} sequences)' for n, s in sets.items())} "
          f"({describe_cpu()})")
    print(_header(list(sets)))
    try:
        result = run(models, args.root, sets, backend=args.backend)
    except ValueError as exc:
        parser.error(str(exc))
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
