"""Where a model loses its things: recall, merges and misses per object size, in the panoptic output and in the
network's own kernels.

STQ says *how much* is lost; this says *where*. For every ground-truth thing of every held-out frame:

* panoptic output (what users see): found (a segment with IoU > 0.5), merged (the segment covering most of it
  also covers > 30 % of another thing), missed (no segment reaches IoU 0.2), the rest "partial";
* network kernels: some thing kernel's mask (sigmoid > 0.5, at the mask stride) has IoU > 0.5 with it at any
  score, and at a score the assembly lets vote (``instance_score_thr``);
* "dropped": not found in the output although such a kernel votes, and the assembly kept none of them (their
  segments failed ``overlap_thr``: a neighbour won too much of their masks).

"kernel found" well above "panoptic found" means the network has the mask but the scores or the assembly lose
it; "kernel found" low means the network itself does not separate the thing. The model runs through the
Pipeline's torch backend (a checkpoint), the kernels are read from the same forward.

Usage: python benchmarks/model_errors.py [--model CKPT.pt] [--data HELD_OUT] [--sequences 10]
       [--json benchmarks/model_errors.json]
Without --data the held-out set of vknet_model/assets/README.md is generated (seed 0, sequences 1000-, 30 frames).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vknet_model.machine import describe_cpu

AREA_BINS = (0, 500, 1500, 4000, 15000)          # pixels at full resolution; the last bin is open
COUNTS = ("things", "found", "merged", "partial", "missed", "kernel_found", "kernel_found_scored", "dropped")


def _bin(area: int) -> int:
    return int(np.searchsorted(AREA_BINS, area, side="right")) - 1


def frame_errors(gt: np.ndarray, pred: np.ndarray, kernel_masks: np.ndarray, kernel_scores: np.ndarray,
                 score_thr: float, label_divisor: int,
                 kernel_kept: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Counts [len(AREA_BINS), len(COUNTS)] of one frame, and its predicted thing segments matching no thing.

    Args:
        gt, pred: int [H, W] panoptic ids (class * divisor + instance; instance 0 = no thing).
        kernel_masks: bool [P, H, W] the thing kernels' masks on the image grid.
        kernel_scores: float [P] their thing scores.
        kernel_kept: bool [P] the assembly kept the kernel's segment (``None``: all kept, nothing "dropped").
    """
    counts = np.zeros((len(AREA_BINS), len(COUNTS)), dtype=np.int64)
    things = [v for v in np.unique(gt) if v % label_divisor]
    segments = [v for v in np.unique(pred) if v % label_divisor]
    seg_masks = {v: pred == v for v in segments}
    matched: set[int] = set()
    kernel_area = kernel_masks.reshape(len(kernel_masks), -1).sum(1)
    for thing in things:
        mask = gt == thing
        area = int(mask.sum())
        row = counts[_bin(area)]
        row[0] += 1
        best, best_iou = -1, 0.0  # segment ids are positive
        for seg, overlap in zip(*np.unique(pred[mask], return_counts=True), strict=True):
            if seg % label_divisor:
                iou = overlap / (area + seg_masks[seg].sum() - overlap)
                if iou > best_iou:
                    best, best_iou = int(seg), iou
        found = best > 0 and best_iou > 0.5
        if found:
            row[1] += 1
            matched.add(best)
        elif best < 0 or best_iou < 0.2:
            row[4] += 1
        else:
            covering = seg_masks[best]
            others = any((covering & (gt == o)).sum() > 0.3 * (gt == o).sum() for o in things if o != thing)
            row[2 if (covering & mask).sum() > 0.5 * area and others else 3] += 1
        inter = (kernel_masks & mask).reshape(len(kernel_masks), -1).sum(1)
        kernel_iou = inter / np.maximum(kernel_area + area - inter, 1)
        row[5] += bool((kernel_iou > 0.5).any())
        voting = (kernel_iou > 0.5) & (kernel_scores >= score_thr)
        row[6] += bool(voting.any())
        if kernel_kept is not None:
            row[7] += bool(not found and voting.any() and not (voting & kernel_kept).any())
    return counts, len([s for s in segments if int(s) not in matched])


def run(model: Path, data: Path, sequences: int) -> dict[str, object]:
    import torch
    from tqdm import tqdm

    from vknet_data.datasets import kitti_step_sequences, read_rgb
    from vknet_eval.evaluate import FRAME_PERIOD_S
    from vknet_model.network import KernelOutputs, VKNetOutput
    from vknet_model.pipeline import Pipeline

    pipeline = Pipeline.from_model(model, backend="torch")
    divisor = pipeline.label_divisor
    cfg = pipeline.backend.contract.config
    proposals, things = cfg.model.num_proposals, cfg.data.num_things
    captured: list[KernelOutputs] = []
    net = pipeline.backend.frame_net.net  # type: ignore[attr-defined]  # the torch backend's VKNet
    net.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    assembled: list[VKNetOutput] = []  # the frame net's outputs: the network's plus the assembly's
    pipeline.backend.frame_net.register_forward_hook(  # type: ignore[attr-defined]
        lambda _module, _inputs, output: assembled.append(output))
    seqs = kitti_step_sequences(data, "val", divisor)[:sequences]
    counts = np.zeros((len(AREA_BINS), len(COUNTS)), dtype=np.int64)
    false_segments = frames = 0
    with tqdm(total=sum(len(s) for s in seqs), unit="frame", desc="model errors") as bar:
        for seq in seqs:
            pipeline.reset(f"sequence {seq.name}")
            for t, path in enumerate(seq.images):
                captured.clear()
                assembled.clear()
                result = pipeline.step(read_rgb(path), stamp=t * FRAME_PERIOD_S, frame_id=seq.name)
                out = captured[-1]
                masks = (out.mask_logits[-1][0, :proposals] > 0).permute(1, 2, 0).to(torch.uint8).cpu().numpy()
                scores = out.cls_logits[-1][0, :proposals, :things].sigmoid().amax(1).cpu().numpy()
                grid = result.upsample(masks).astype(bool).transpose(2, 0, 1)  # [P, H, W]
                kept = assembled[-1].slot_keep[:proposals].cpu().numpy()
                frame_counts, false = frame_errors(seq.labels[t](), result.panoptic.astype(np.int64), grid, scores,
                                                   pipeline.postprocess.instance_score_thr, divisor, kept)
                counts += frame_counts
                false_segments += false
                frames += 1
                bar.update()
    rows = []
    for b, lower in enumerate(AREA_BINS):
        upper = AREA_BINS[b + 1] if b + 1 < len(AREA_BINS) else None
        n = int(counts[b, 0])
        rows.append({"area_px": [lower, upper], "things": n,
                     **{name: (float(counts[b, i] / n) if n else None) for i, name in enumerate(COUNTS) if i}})
    total = counts.sum(0)
    overall = {name: float(total[i] / max(total[0], 1)) for i, name in enumerate(COUNTS) if i}
    return {"model": str(model), "data": str(data), "sequences": len(seqs), "frames": frames,
            "things": int(total[0]), "overall": overall, "by_area": rows,
            "false_segments_per_frame": false_segments / max(frames, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("vknet_model/assets/tiny_synth.pt"),
                        help="a checkpoint (.pt); default: the bundled model")
    parser.add_argument("--data", type=Path, help="held-out KITTI-STEP-layout root (split val); default: generated")
    parser.add_argument("--sequences", type=int, default=10)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/model_errors.json"))
    args = parser.parse_args()
    from vknet_data.synth import held_out_or

    with held_out_or(args.data, sequences=args.sequences, progress=False) as data:
        result = run(args.model, data, args.sequences)
    print(f"{result['frames']} frames, {result['things']} things, model {result['model']}")
    print(f"{'area (px)':>14} {'things':>7} " + " ".join(f"{c:>10}" for c in COUNTS[1:]))
    for row in result["by_area"]:  # type: ignore[attr-defined]
        lower, upper = row["area_px"]
        span = f"{lower}-{upper if upper else ''}"
        print(f"{span:>14} {row['things']:>7} " + " ".join(
            f"{row[c]:>10.3f}" if row[c] is not None else f"{'-':>10}" for c in COUNTS[1:]))
    overall = result["overall"]
    print(f"{'all':>14} {result['things']:>7} " + " ".join(f"{overall[c]:>10.3f}" for c in COUNTS[1:]))  # type: ignore[index]
    print(f"predicted thing segments matching no thing: {result['false_segments_per_frame']:.2f} per frame")
    result.update(machine=describe_cpu(), date=time.strftime("%Y-%m-%d"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
