"""Shared by the training tests: a small network's config and a tiny synthetic dataset to train it on."""

from __future__ import annotations

from pathlib import Path

import pytest

from vknet_data.synth import SynthConfig, write_sequences

SMALL_MODEL = """
model:
  backbone_depth: 18
  backbone_width: 8
  channels: 32
  num_proposals: 6
  num_stages: 2
  num_heads: 2
  ffn_dim: 64
  embed_dim: 16
  norm_groups: 4
  input_height: 64
  input_width: 160
train:
  crop: [64, 160]
  input_scale: 0.5
  scale_range: [0.9, 1.1]
  iters: 4
  warmup_iters: 2
  lr_steps: [3]
  batch_size: 1
  checkpoint_every: 2
  val_every: 0
  log_every: 1
  workers: 0
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    cfg = SynthConfig(height=128, width=320, frames=4)
    write_sequences(root, sequences=2, seed=0, cfg=cfg, progress=False)
    write_sequences(root, sequences=1, seed=0, split="val", first_sequence=100, cfg=cfg, progress=False)
    config = root / "small.yaml"
    config.write_text(SMALL_MODEL)
    return root, config
