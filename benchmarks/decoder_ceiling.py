"""The decoder's ceiling: STQ / AQ / SQ when the network is perfect, per input size and merge stride.

Each ground-truth frame is letterboxed to the network input (nearest neighbour, void padding) and turned
into what a perfect network would output on its stride-8 grid: one kernel per instance and per stuff class
present, mask logits = logit of the soft area fraction (0 where half the cell is covered), class score 1 on
its own class, semantic logits = log class fractions. These go through ``assemble_panoptic`` exactly as
the exported graph runs it, and back to camera resolution as the Pipeline does (nearest merge cell), with
oracle track ids. What is lost is what stride-8 masks, the merge stride and the letterbox lose: no trained
network through this decoder can score higher. Also times the assembly per setting (torch, this CPU, the
bundled model's 37 kernels).

Usage: python benchmarks/decoder_ceiling.py --data DIR [--split val] [--sizes 192x640 384x1248]
       [--strides 4 2] [--mask-strides 8 4] [--json benchmarks/decoder_ceiling.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from training.losses import targets_from_panoptic
from vknet_data.datasets import kitti_step_sequences
from vknet_eval.scoring import PanopticScorer
from vknet_model.config import DataConfig, PostprocessConfig
from vknet_model.machine import describe_cpu
from vknet_model.panoptic import assemble_panoptic
from vknet_model.preprocess import Letterbox

EPS = 1e-4
MASK_STRIDE = 8  # the paper's mask features


def perfect_panoptic(gt: np.ndarray, data: DataConfig, size: tuple[int, int], stride: int,
                     post: PostprocessConfig, mask_stride: int = MASK_STRIDE) -> np.ndarray:
    """The panoptic map (camera resolution) that the decoder makes of a perfect network's outputs for ``gt``.

    ``mask_stride`` is where the perfect masks live: 8 (the network's) or the merge stride itself, which
    separates what the merge resolution loses from what stride-8 masks lose.
    """
    box = Letterbox.fit(gt.shape, size)
    rh, rw = box.resized
    padded = np.full(size, data.void_id * data.label_divisor, dtype=np.int64)
    padded[:rh, :rw] = cv2.resize(gt.astype(np.int32), (rw, rh), interpolation=cv2.INTER_NEAREST)
    t = targets_from_panoptic(padded, data, (size[0] // mask_stride, size[1] // mask_stride))
    k, n_things = data.num_classes, data.num_things
    g, h, w = t.thing_labels.numel(), t.semantic.shape[0], t.semantic.shape[1]
    present = torch.nonzero(t.stuff_present).flatten()
    # Kernels as the network orders them: the instances (as proposals), then one per stuff class.
    masks = torch.full((g + k - n_things, h, w), -20.0)
    masks[:g] = torch.logit(t.thing_masks.clamp(EPS, 1 - EPS))
    masks[g + present] = torch.logit(t.stuff_masks[present].clamp(EPS, 1 - EPS))
    cls = torch.zeros(g + k - n_things, k)
    cls[torch.arange(g), t.thing_labels] = 1.0
    cls[g + present, n_things + present] = 1.0
    fractions = torch.cat((torch.zeros(n_things, h, w), t.stuff_masks))
    for label in range(n_things):  # thing class fractions, crowd included, from the semantic target
        fractions[label] = (t.semantic == label).float()
    sem = torch.log(fractions.clamp(min=EPS))
    out = assemble_panoptic(cls, masks, sem, num_proposals=g, num_thing_classes=n_things,
                            instance_score_thr=post.instance_score_thr, overlap_thr=post.overlap_thr,
                            mask_thr=post.mask_thr, mask_stride=mask_stride, upsample=mask_stride // stride)
    net_to_dataset = np.asarray((*data.net_to_dataset, data.void_id))
    labels = out.labels.numpy().astype(np.int64)
    slot_class = net_to_dataset[labels]
    slot_instance = np.zeros(len(labels), dtype=np.int64)
    slot_instance[:g] = t.thing_ids.numpy() % data.label_divisor
    slot_map = out.slot_map.numpy()
    claimed = slot_map >= 0
    cells = np.where(claimed, slot_class[slot_map] * data.label_divisor + slot_instance[slot_map],
                     net_to_dataset[out.semantic_map.numpy()] * data.label_divisor)
    rows, cols = box.grid_indices(stride)
    return cells.take(cols, axis=1).take(rows, axis=0)


def time_assembly(size: tuple[int, int], stride: int, mask_stride: int, kernels: int = 37, runs: int = 20) -> float:
    h, w = size[0] // mask_stride, size[1] // mask_stride
    gen = torch.Generator().manual_seed(0)
    masks = torch.randn(kernels, h, w, generator=gen) * 4
    cls = torch.rand(kernels, 19, generator=gen)
    sem = torch.randn(19, h, w, generator=gen)
    times = []
    with torch.inference_mode():
        for i in range(runs + 2):
            start = time.perf_counter()
            assemble_panoptic(cls, masks, sem, num_proposals=20, num_thing_classes=2, instance_score_thr=0.25,
                              overlap_thr=0.6, mask_thr=0.5, mask_stride=mask_stride, upsample=mask_stride // stride)
            if i >= 2:
                times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="KITTI-STEP-layout root (e.g. `vknet synth` output)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--sizes", nargs="+", default=["192x640", "384x1248"], help="network inputs HxW")
    parser.add_argument("--strides", nargs="+", type=int, default=[4, 2], help="merge strides")
    parser.add_argument("--mask-strides", nargs="+", type=int, default=[8, 4],
                        help="strides of the perfect masks (the network's model.mask_stride); the merge stride "
                             "itself is always added: perfect masks on the merge grid")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/decoder_ceiling.json"))
    args = parser.parse_args()
    data, post = DataConfig(), PostprocessConfig()
    sequences = kitti_step_sequences(args.data, args.split, data.label_divisor)
    rows = []
    for text in args.sizes:
        size = tuple(int(v) for v in text.split("x"))
        assert len(size) == 2
        for stride in args.strides:
            for masks_at in sorted({m for m in args.mask_strides if m >= stride} | {stride}, reverse=True):
                scorer = PanopticScorer(data, vpq=False)
                for seq in sequences:
                    for label in seq.labels:
                        gt = label()
                        scorer.add(seq.name, gt, perfect_panoptic(gt, data, (size[0], size[1]), stride, post,
                                                                  mask_stride=masks_at))
                r = scorer.result()
                ms = time_assembly((size[0], size[1]), stride, masks_at) if masks_at > stride or masks_at in \
                    args.mask_strides else float("nan")
                rows.append({"input": text, "merge_stride": stride, "masks_at_stride": masks_at, "STQ": r["STQ"],
                             "AQ": r["AQ"], "SQ": r["SQ"], "SQ_per_class": r["SQ_per_class"],
                             "frames": r["frames"], "assembly_ms": ms})
                print(f"{text:>9} merge stride {stride}, masks at {masks_at}: STQ {r['STQ']:.4f} AQ {r['AQ']:.4f} "
                      f"SQ {r['SQ']:.4f}  assembly {ms:.1f} ms", flush=True)
    print(f"\n{'input':>9} {'merge':>5} {'masks':>5} {'STQ':>7} {'AQ':>7} {'SQ':>7} {'assembly ms':>12}  worst classes")
    for row in rows:
        worst = sorted(row["SQ_per_class"].items(), key=lambda kv: kv[1])[:3]
        print(f"{row['input']:>9} {row['merge_stride']:>5} {row['masks_at_stride']:>5} {row['STQ']:>7.4f} "
              f"{row['AQ']:>7.4f} {row['SQ']:>7.4f} {row['assembly_ms']:>12.1f}  "
              + ", ".join(f"{k} {v:.2f}" for k, v in worst))
    args.json.write_text(json.dumps({"cpu": describe_cpu(), "torch_threads":
                                     torch.get_num_threads(), "data": str(args.data), "split": args.split,
                                     "sequences": len(sequences), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
