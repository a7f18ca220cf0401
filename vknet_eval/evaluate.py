"""Run the Pipeline over labelled sequences and score it with STQ (used by training and `vknet predict`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from vknet_data.datasets import VideoSequence, read_rgb
from vknet_eval.scoring import PanopticScorer
from vknet_model.config import DataConfig
from vknet_model.pipeline import Pipeline

_LOG = logging.getLogger(__name__)
FRAME_PERIOD_S = 0.1  # KITTI runs at 10 Hz: stamps given to the pipeline so it sees a steady video


def predict_sequence(pipeline: Pipeline, sequence: VideoSequence) -> Iterator[np.ndarray]:
    """Yield the panoptic prediction (int32 [H, W]) of each frame; the tracker starts fresh for the sequence."""
    pipeline.reset(f"sequence {sequence.name}")
    for t, image_path in enumerate(sequence.images):
        yield pipeline.step(read_rgb(image_path), stamp=t * FRAME_PERIOD_S, frame_id=sequence.name).panoptic


def evaluate_stq(pipeline: Pipeline, sequences: list[VideoSequence], data: DataConfig,
                 progress: bool = False) -> dict[str, float]:
    """STQ, AQ and SQ of ``pipeline`` on ``sequences`` (KITTI-STEP rules: crowd, void, divisor)."""
    from tqdm import tqdm

    scorer = PanopticScorer(data, vpq=False)
    frames = sum(len(s) for s in sequences)
    with tqdm(total=frames, unit="frame", desc="validate", disable=not progress, leave=False) as bar:
        for sequence in sequences:
            for t, prediction in enumerate(predict_sequence(pipeline, sequence)):
                scorer.add(sequence.name, sequence.labels[t](), prediction)
                bar.update(1)
    result = scorer.result()
    return {"STQ": result["STQ"], "AQ": result["AQ"], "SQ": result["SQ"]}
