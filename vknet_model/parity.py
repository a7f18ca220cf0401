"""Compare two backends on the same frames, each feeding back its own kernels as the node would.

Used by `benchmarks/tensorrt_parity.py` (TensorRT against ONNX Runtime, for users who have TensorRT) and
by the tests (torch against ONNX Runtime here). Float outputs are compared by their largest absolute
difference; integer outputs (slot map, labels, keep flags, areas, boxes) by the fraction of elements that
differ, because one flipped argmax at a near-tie is expected in fp16 and must not hide a real mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vknet_model.backends.base import Backend
from vknet_model.config import PostprocessConfig
from vknet_model.network import threshold_tensor
from vknet_model.preprocess import letterbox


@dataclass
class ParityReport:
    frames: int = 0
    max_abs: dict[str, float] = field(default_factory=dict)       # float outputs
    mismatch: dict[str, float] = field(default_factory=dict)      # integer outputs: fraction of elements
    # Worst float difference of each frame: a mask logit within float error of the binarisation threshold
    # flips one pooled cell and moves that frame's kernels by ~1e-2, so callers can tell one such frame
    # from a graph that is wrong on every frame.
    frame_worst: list[float] = field(default_factory=list)

    def worst_float(self) -> float:
        return max(self.max_abs.values(), default=0.0)

    def worst_mismatch(self) -> float:
        return max(self.mismatch.values(), default=0.0)


def compare_backends(reference: Backend, candidate: Backend, images: Sequence[np.ndarray],
                     postprocess: PostprocessConfig | None = None) -> ParityReport:
    """Run ``images`` (RGB uint8 [H, W, 3], in order) through both backends and compare every output."""
    if reference.contract.input_size != candidate.contract.input_size:
        raise ValueError(f"input sizes differ: {reference.contract.input_size} vs {candidate.contract.input_size}")
    thresholds = threshold_tensor(postprocess or reference.contract.config.postprocess)
    states = [reference.initial_kernels(), candidate.initial_kernels()]
    report = ParityReport()
    for t, rgb in enumerate(images):
        network_input, _ = letterbox(rgb, reference.contract.input_size)
        use_prev = torch.tensor([0.0 if t == 0 else 1.0])
        outputs = []
        for k, backend in enumerate((reference, candidate)):
            out = backend.infer(torch.from_numpy(network_input).to(backend.device), states[k].to(backend.device),
                                use_prev.to(backend.device), thresholds.to(backend.device))
            states[k] = out.kernels
            outputs.append(out)
        frame_worst = 0.0
        for name, a, b in zip(outputs[0]._fields, outputs[0], outputs[1], strict=True):
            a, b = a.detach().cpu(), b.detach().cpu()
            if a.is_floating_point():
                diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
                report.max_abs[name] = max(report.max_abs.get(name, 0.0), diff)
                frame_worst = max(frame_worst, diff)
            else:
                frac = float((a != b).double().mean()) if a.numel() else 0.0
                report.mismatch[name] = max(report.mismatch.get(name, 0.0), frac)
        report.frame_worst.append(frame_worst)
        report.frames += 1
    return report
