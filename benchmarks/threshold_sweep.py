"""Score assembly and tracker thresholds on labelled sequences: the network runs once per assembly setting,
the tracker once per setting.

The thresholds are model-specific (its scores and embeddings decide what a good threshold is), so they are
tuned per model, on sequences that are *not* the ones its scores are reported on. The network's outputs do
not depend on the tracker (the previous frame's kernels are the network's own), so each frame's outputs are
recorded once per assembly setting (``instance_score_thr``, ``overlap_thr``, ``mask_thr``: inputs of the
graph, so the network reruns, ~40 s for 300 frames here) and replayed for every tracker setting (the tracker,
the pipeline's own steps and STQ: ~10 s) instead of rerunning the network.

Usage: python benchmarks/threshold_sweep.py [--model M] [--data DIR] [--split val]
       [--grid instance_score_thr=0.2,0.25 match_score_thr=0.5,0.6,0.7 memo_frames=5,15]
       [--json benchmarks/threshold_sweep.json]
Without --data the tuning set of ``vknet_eval.synthetic_sets`` is generated (seed 7, sequences 2000-2009, 30
frames; never a set scores are reported on).

``instance_score_thr`` and the tracker's ``init_score_thr`` go together: a segment kept at a score below
``init_score_thr`` never starts a track, so its pixels carry no id (void) and SQ falls. Such rows are marked.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vknet_eval.synthetic_sets import FRAMES, SETS, SPLIT, ensure_set
from vknet_model.machine import describe_cpu


class RecordingBackend:
    """A backend that records every ``infer`` output, then serves them again in order after ``replay()``."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.outputs: list[Any] = []
        self._replay: Iterator[Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def infer(self, *args: Any) -> Any:
        if self._replay is None:
            out = self._backend.infer(*args)
            self.outputs.append(out)
            return out
        return next(self._replay)

    def replay(self) -> None:
        self._replay = iter(self.outputs)

    def record(self) -> None:
        """Forget the recording and record the next ``infer`` calls afresh."""
        self.outputs, self._replay = [], None


def parse_grid(items: list[str], *configs: Any) -> dict[str, list[Any]]:
    """``["name=v1,v2", ...]`` -> {name: [values]} typed like the field of whichever config has it; ValueError
    names the item."""
    fields = {f.name: type(getattr(cfg, f.name)) for cfg in configs for f in dataclasses.fields(cfg)}
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--grid {item!r}: expected NAME=V1,V2 with NAME one of {sorted(fields)}")
        grid[name] = [fields[name](v) for v in values.split(",")]
    return grid


def _combinations(grid: dict[str, list[Any]], names: set[str]) -> list[dict[str, Any]]:
    """Every combination of the grid's values for the fields in ``names`` ([{}] when there are none)."""
    sub = {k: v for k, v in grid.items() if k in names}
    return [dict(zip(sub, values, strict=True)) for values in itertools.product(*sub.values())]


def keeps_things_without_ids(postprocess: Any, tracker: Any) -> bool:
    """Whether the assembly keeps segments the tracker will not start a track for (scores between the two)."""
    return bool(postprocess.instance_score_thr < tracker.init_score_thr)


def run(model: Path | None, data: Path, split: str, grid: dict[str, list[Any]]) -> dict[str, Any]:
    from vknet_data.datasets import kitti_step_sequences, read_rgb
    from vknet_eval.evaluate import FRAME_PERIOD_S
    from vknet_eval.scoring import PanopticScorer
    from vknet_model.backends import open_backend
    from vknet_model.bundled import resolve_model
    from vknet_model.pipeline import Pipeline

    model = resolve_model(model, prefer_onnx=True)
    recorder = RecordingBackend(open_backend(model))
    pipeline = Pipeline(recorder)  # type: ignore[arg-type]  # a Backend in all but name
    base_post, base_tracker = pipeline.postprocess, pipeline.tracker_config  # the model's own (its contract)
    sequences = kitti_step_sequences(data, split, pipeline.data.label_divisor)
    labels = [[load() for load in s.labels] for s in sequences]

    def live_pass(postprocess: Any) -> tuple[list[tuple[int, ...]], float]:
        """One live pass with these assembly thresholds; the recorder keeps every frame's outputs."""
        recorder.record()
        pipeline.set_postprocess(postprocess)
        shapes = []
        start = time.perf_counter()
        for sequence in sequences:
            pipeline.reset(f"sequence {sequence.name}")
            for t, path in enumerate(sequence.images):
                image = read_rgb(path)
                pipeline.step(image, stamp=t * FRAME_PERIOD_S, frame_id=sequence.name)
            shapes.append(image.shape)
        return shapes, time.perf_counter() - start

    def score(tracker: Any, shapes: list[tuple[int, ...]]) -> dict[str, float]:
        recorder.replay()  # the recording pass only recorded; every setting is scored on a replay of it
        pipeline.set_tracker_config(tracker)
        scorer = PanopticScorer(pipeline.data, vpq=False)
        for sequence, frames, shape in zip(sequences, labels, shapes, strict=True):
            pipeline.reset(f"sequence {sequence.name}")
            blank = np.zeros(shape, dtype=np.uint8)
            for t, gt in enumerate(frames):
                result = pipeline.step(blank, stamp=t * FRAME_PERIOD_S, frame_id=sequence.name)
                scorer.add(sequence.name, gt, result.panoptic)
        totals = scorer.result()
        return {k: round(float(totals[k]), 4) for k in ("STQ", "AQ", "SQ")}

    post_names = {f.name for f in dataclasses.fields(base_post)}
    tracker_names = {f.name for f in dataclasses.fields(base_tracker)}
    rows, network_s = [], 0.0
    post_settings = _combinations(grid, post_names)
    tracker_settings = _combinations(grid, tracker_names)
    if {} not in post_settings:
        post_settings.insert(0, {})
    if {} not in tracker_settings:
        tracker_settings.insert(0, {})
    for post_setting in post_settings:
        postprocess = dataclasses.replace(base_post, **post_setting)
        shapes, seconds = live_pass(postprocess)
        network_s += seconds
        for tracker_setting in tracker_settings:
            setting = {**post_setting, **tracker_setting}
            tracker = dataclasses.replace(base_tracker, **tracker_setting)
            name = " ".join(f"{k}={v}" for k, v in setting.items()) or "model's own"
            rows.append({"setting": name, **dataclasses.asdict(postprocess), **dataclasses.asdict(tracker),
                         **score(tracker, shapes), "voids_kept_things": keeps_things_without_ids(postprocess, tracker)})
    return {"model": str(model), "data": str(data), "split": split, "frames": sum(len(f) for f in labels),
            "network_s": round(network_s, 1), "cpu": describe_cpu(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model file (default: the bundled ONNX model)")
    parser.add_argument("--data", type=Path, help="KITTI-STEP-layout tuning data (default: generated, seed 7)")
    parser.add_argument("--split", default="val", help="split of --data (the generated tuning set is val)")
    parser.add_argument("--sequences", type=int, default=SETS["tuning"].count,
                        help="sequences of the tuning set to generate without --data")
    parser.add_argument("--grid", nargs="*", default=["match_score_thr=0.4,0.5,0.6,0.7,0.8"],
                        help="assembly (postprocess) and tracker settings to try, NAME=V1,V2 each; every "
                             "combination is scored")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/threshold_sweep.json"))
    args = parser.parse_args()

    from vknet_model.config import PostprocessConfig, TrackerConfig

    try:
        grid = parse_grid(args.grid, PostprocessConfig(), TrackerConfig())
    except ValueError as exc:
        parser.error(str(exc))
    tuning = dataclasses.replace(SETS["tuning"], count=args.sequences)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or ensure_set(Path(tmp) / "tuning", tuning)
        result = run(args.model, data, args.split if args.data else SPLIT, grid)
    if args.data is None:
        result["data"] = (f"generated: seed {tuning.seed}, sequences {tuning.first}-{tuning.first + tuning.count - 1}, "
                          f"{FRAMES} frames")
    print(f"{result['frames']} frames of {result['data']}; network pass {result['network_s']} s ({result['cpu']})")
    print(f"{'setting':<50} {'STQ':>7} {'AQ':>7} {'SQ':>7}")
    best = max(result["rows"], key=lambda r: r["STQ"])
    for row in result["rows"]:
        mark = ("  *" if row["voids_kept_things"] else "") + ("  <- best" if row is best else "")
        print(f"{row['setting']:<50} {row['STQ']:7.4f} {row['AQ']:7.4f} {row['SQ']:7.4f}{mark}")
    if any(row["voids_kept_things"] for row in result["rows"]):
        print("* instance_score_thr below the tracker's init_score_thr: segments scored between the two are kept "
              "but start no track, so their pixels are void; sweep both together")
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
