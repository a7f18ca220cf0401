"""Video K-Net training: frame pairs, AdamW, warm-up and step decay, AMP, checkpoints, resume, validation.

One process trains on the CPU or one GPU; under ``torchrun`` every process trains one replica with torch
DDP (NCCL on GPUs, gloo on CPUs) and rank 0 logs, validates and writes checkpoints.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from training.ema import WeightAverage
from training.grow import grow_into
from training.losses import VideoKNetCriterion, targets_from_panoptic
from vknet_data.datasets import AugmentConfig, FramePairDataset, VideoSequence, kitti_step_sequences
from vknet_data.synth import SynthConfig, write_held_out, write_sequences
from vknet_data.synth_stream import TRAIN_SCENE_SEED, SyntheticPairStream, single_thread_worker
from vknet_eval.evaluate import evaluate_stq
from vknet_model.backbone import freeze_batchnorm
from vknet_model.backends.torch_backend import TorchBackend
from vknet_model.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from vknet_model.config import DataConfig, VKNetConfig, config_from_dict
from vknet_model.network import KernelOutputs, VKNet, build_frame_net, build_model
from vknet_model.pipeline import Pipeline
from vknet_model.pretrained import load_torchvision_resnet

_LOG = logging.getLogger(__name__)
SCENE_FRAMES = 30          # frames per synthetic scene, as the held-out sets are generated


@dataclass(frozen=True)
class RunOptions:
    """What a training run reads and writes (the rest comes from the config)."""

    data: Path | None               # KITTI-STEP-layout root (with ``synthetic``: only validation reads it)
    out: Path
    synthetic: bool = False         # train on freshly generated scenes (vknet_data.synth_stream)
    backbone_weights: Path | None = None  # torchvision ResNet state dict (ImageNet) for the backbone
    split: str = "train"
    val_split: str | None = "val"
    val_sequences: int = 0          # 0: all of them
    iters: int | None = None        # overrides train.iters
    device: str = "auto"
    resume: bool = True             # continue from out/last.pt when it exists
    init: Path | None = None        # start from these weights (fine-tuning)
    progress: bool = True
    time_limit_s: float | None = None  # stop (resumably) once training has taken this long
    workers: int | None = None      # overrides train.workers (data-loading processes)


class PairModel(nn.Module):
    """Both frames of a pair in one forward, so that DDP sees one forward per backward.

    The reference frame runs first as a video's first frame; the key frame then links to the reference
    frame's kernels (detached), which trains kernel linking the way inference uses it.
    """

    def __init__(self, net: VKNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, key: torch.Tensor, ref: torch.Tensor) -> tuple[KernelOutputs, KernelOutputs]:
        b = key.shape[0]
        channels = self.net.initial.proposals.in_channels
        zeros = torch.zeros(b, self.net.num_kernels, channels, device=key.device, dtype=torch.float32)
        ref_out = self.net(ref, zeros, torch.zeros(b, device=key.device))
        key_out = self.net(key, ref_out.kernels.detach(), torch.ones(b, device=key.device))
        return key_out, ref_out


class PairCollate:
    """numpy samples -> image tensors and loss targets (runs in the data-loading workers)."""

    def __init__(self, data: DataConfig, mask_size: tuple[int, int]) -> None:
        self.data = data
        self.mask_size = mask_size

    def __call__(self, samples: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for name in ("key", "ref"):
            batch[f"{name}_image"] = torch.from_numpy(np.stack([s[f"{name}_image"] for s in samples]))
            batch[f"{name}_targets"] = [targets_from_panoptic(s[f"{name}_panoptic"], self.data, self.mask_size)
                                        for s in samples]
        return batch


def _seed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset.reseed(torch.initial_seed() % 2**32)  # type: ignore[attr-defined]


def lr_factor(step: int, cfg: VKNetConfig) -> float:
    """The learning rate of iteration ``step`` as a fraction of ``train.lr``: a linear warm-up over
    ``train.warmup_iters``, then x0.1 at each of ``train.lr_steps``."""
    t = cfg.train
    warm = min(1.0, (step + 1) / t.warmup_iters) if t.warmup_iters else 1.0
    return warm * 0.1 ** sum(step >= s for s in t.lr_steps)


def _param_groups(net: VKNet, cfg: VKNetConfig) -> list[dict[str, Any]]:
    backbone = [p for p in net.backbone.parameters() if p.requires_grad]
    ids = {id(p) for p in backbone}
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    return [{"params": backbone, "lr": cfg.train.lr * cfg.train.backbone_lr_mult},
            {"params": rest, "lr": cfg.train.lr}]


def weights_checksum(net: nn.Module) -> str:
    """Digest of the trainable parameters.

    Buffers (BatchNorm running statistics) are left out on purpose: DDP broadcasts rank 0's buffers at the
    start of every forward, so after the last step each rank holds its own; only rank 0's are saved.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(net.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class _Distributed:
    """torchrun's environment, or a single process."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but no CUDA device is available")
        self.device = torch.device(f"cuda:{local}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1:
            dist.init_process_group("nccl" if cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _batches(loader: DataLoader[Any], sampler: DistributedSampler[Any], start_epoch: int) -> Iterator[dict[str, Any]]:
    epoch = start_epoch
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _scenes_generated(steps: int, pairs_per_step: int) -> int:
    """An upper bound on the synthetic scene numbers ``steps`` iterations can have drawn: one scene per pair at
    most, plus the scenes the data workers hold in their pools (0 for a run that has not started)."""
    return 0 if steps == 0 else steps * pairs_per_step + 10_000


def scenes_trained_on(payload: dict[str, Any]) -> int:
    """Synthetic scene numbers below the returned one may have been trained on by a checkpoint's weights, so a
    fine-tune from them (``--init``) starts its stream past them. Checkpoints written before ``scenes_after``
    was stored (the bundled model's) are bounded from their step, one process, their batch size."""
    if "scenes_after" in payload:
        return int(payload["scenes_after"])
    batch = int(payload.get("config", {}).get("train", {}).get("batch_size", 2))
    return _scenes_generated(int(payload.get("step", 0)), batch)


def _check_resumable(payload: dict[str, Any], cfg: VKNetConfig, last: Path) -> None:
    """Resume only into the same network and data; a changed schedule (longer run, new lr steps) is allowed.

    Extending a run that is going well is common; changing the architecture or the classes under a
    checkpoint is always a mistake, so only those are refused.
    """
    # The stored config with today's defaults for settings added since it was written.
    saved = config_from_dict(payload.get("config", {}), source=f"{last}:config").to_dict()
    current = cfg.to_dict()
    for section in ("model", "data"):
        if _weights_part(section, saved.get(section)) != _weights_part(section, current[section]):
            raise RuntimeError(f"{last} was trained with a different {section} config (checkpoint config "
                               f"{payload['config_hash']}, now {cfg.hash()}): use another --out or --no-resume")
    if payload["config_hash"] != cfg.hash():
        changed = sorted(k for k in current if saved.get(k) != current[k])
        _LOG.warning("resuming %s under a changed config (%s): %s -> %s", last, ", ".join(changed),
                     payload["config_hash"], cfg.hash())


# Model settings that shape no weight: a run may resume with them changed (a larger deployment input, a finer
# merge stride); every other model or data setting must match the checkpoint.
_INFERENCE_ONLY = frozenset({"input_height", "input_width", "merge_stride", "vote_score_power"})


def model_difference(a: VKNetConfig, b: VKNetConfig) -> str:
    """The weight-shaping model settings where ``a`` and ``b`` differ, as "name a -> b" phrases."""
    left, right = a.to_dict()["model"], b.to_dict()["model"]
    return ", ".join(f"{k} {left.get(k)} -> {right.get(k)}" for k in sorted(set(left) | set(right))
                     if k not in _INFERENCE_ONLY and left.get(k) != right.get(k))


def _growable(init: VKNetConfig, cfg: VKNetConfig) -> bool:
    """``cfg`` is ``init``'s network with more update stages, a backbone twice as wide and/or more thing
    proposals (``--init`` then grows it: training/grow.py)."""
    grown = ("num_stages", "backbone_width", "num_proposals")
    left, right = init.to_dict()["model"], cfg.to_dict()["model"]
    for key in grown:
        left.pop(key), right.pop(key)
    a, b = init.model, cfg.model
    return (_weights_part("model", left) == _weights_part("model", right)
            and a.num_stages <= b.num_stages and b.backbone_width in (a.backbone_width, 2 * a.backbone_width)
            and a.num_proposals <= b.num_proposals
            and any(getattr(a, key) != getattr(b, key) for key in grown))


def _weights_part(section: str, values: Any) -> Any:
    if section != "model" or not isinstance(values, dict):
        return values
    return {k: v for k, v in values.items() if k not in _INFERENCE_ONLY}


def train(cfg: VKNetConfig, opts: RunOptions) -> Path:
    """Train ``cfg`` on ``opts.data``; return the path of the final checkpoint (``out/model.pt``)."""
    env = _Distributed(opts.device)
    try:
        return _Run(cfg, opts, env).train()
    finally:
        env.close()


class _Run:
    """One training run: built from the config and options, then stepped, validated on schedule and finished.

    Every process steps; rank 0 (``env.main``) also logs, validates and writes checkpoints.
    """

    def __init__(self, cfg: VKNetConfig, opts: RunOptions, env: _Distributed) -> None:
        t = cfg.train
        self.cfg, self.opts, self.env = cfg, opts, env
        self.iters = opts.iters or t.iters
        self.last = opts.out / "last.pt"
        torch.manual_seed(t.seed)
        # scene_base: synthetic scene numbers below it were trained on by the weights this run starts from.
        self.net, self.scene_base = _initial_net(cfg, opts, env)
        self.optimizer = torch.optim.AdamW(_param_groups(self.net, cfg), lr=t.lr, weight_decay=t.weight_decay)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.seconds_before = 0.0  # training time of earlier sittings of this run (from last.pt)
        # Rank 0 alone keeps the weight average: every rank holds the same weights after a step.
        self.ema = WeightAverage(self.net, t.ema_decay) if t.ema_decay > 0 and env.main else None
        self.start = self._resume()
        self.model = _replicated(PairModel(self.net), env)
        self.criterion = VideoKNetCriterion(
            num_proposals=cfg.model.num_proposals, num_thing_classes=cfg.data.num_things,
            num_classes=cfg.data.num_classes, weights=t.loss, cost_focal=t.loss.cost_focal, cost_dice=t.loss.cost_dice,
            cost_mask_bce=t.loss.cost_mask_bce, upsample=self.net.mask_stride // t.loss_stride,
            cls_target="iou" if t.cls_target == "iou" else "binary", vote_power=cfg.model.vote_score_power)
        self.batches, source = _training_batches(cfg, opts, env, start=self.start,
                                                 first_scene=self._scenes_after(self.start))
        opts.out.mkdir(parents=True, exist_ok=True)  # once the data is found: a wrong --data leaves no empty run
        self.held_out, self.seen = _validation_sets(opts, cfg) if env.main else ([], [])
        self.amp = t.amp and env.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.log_rows: list[dict[str, float]] = []
        self.started = time.perf_counter()
        if env.main:
            _LOG.info("training %s (config %s) for %d iterations on %s x%d, %s, batch %d pairs per process, crop "
                      "%dx%d, scale %.2f x [%.2f, %.2f], losses at stride %d", opts.out, cfg.hash(), self.iters,
                      env.device, env.world, source, t.batch_size, t.crop[0], t.crop[1], t.input_scale,
                      t.scale_range[0], t.scale_range[1], t.loss_stride)

    def _seconds(self) -> float:
        """Training time of the whole run so far, earlier sittings included (what its files record)."""
        return self.seconds_before + time.perf_counter() - self.started

    def _save_last(self, done: int) -> None:
        """Write ``last.pt``: everything a later sitting needs to go on exactly where this one is (the time
        unrounded: a first sitting shorter than a rounding step must still count)."""
        average = {"ema": self.ema.state_dict()} if self.ema is not None else {}
        save_checkpoint(self.last, self.net, self.cfg, step=done, optimizer=self.optimizer.state_dict(),
                        scene_base=self.scene_base, scenes_after=self._scenes_after(done),
                        train_seconds=self._seconds(), **average)

    def _scenes_after(self, steps: int) -> int:
        """Synthetic scene numbers below this may have been drawn by the weights after ``steps`` iterations."""
        return self.scene_base + _scenes_generated(steps, self.cfg.train.batch_size * self.env.world)

    def _resume(self) -> int:
        """Continue from ``out/last.pt`` when asked to and it exists; return the iteration to start at."""
        if not (self.opts.resume and self.last.is_file()):
            return 0
        payload = read_checkpoint(self.last)
        _check_resumable(payload, self.cfg, self.last)
        self.net.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scene_base = int(payload.get("scene_base", self.scene_base))
        self.seconds_before = float(payload.get("train_seconds", 0.0))
        start = int(payload["step"])
        if self.ema is not None:
            if "ema" in payload:
                self.ema.load_state_dict(payload["ema"])
            else:
                self.ema = WeightAverage(self.net, self.cfg.train.ema_decay)
                _LOG.warning("%s holds no weight average (train.ema_decay was 0): the average starts from its "
                             "weights at iteration %d", self.last, start)
        _LOG.info("resumed from %s at iteration %d", self.last, start)
        return start

    def train(self) -> Path:
        """Step from ``start`` to ``iters``; return the final checkpoint's path (``last.pt`` when the time
        limit stopped the run first)."""
        from tqdm import tqdm

        _train_mode(self.net, self.cfg)
        bar = tqdm(total=self.iters, initial=self.start, unit="it", desc="train",
                   disable=not (self.env.main and self.opts.progress))
        self.started = time.perf_counter()
        for step in range(self.start, self.iters):
            loss, parts, grad_norm = self.step(step, next(self.batches))
            bar.update(1)
            if self.env.main:
                row = self.record(step + 1, float(loss.detach()), parts, grad_norm)
                bar.set_postfix(loss=f"{row['loss']:.3f}")
            if step + 1 < self.iters and self._out_of_time():
                bar.close()
                return self.pause(step + 1)
        bar.close()
        return self.finish()

    def _out_of_time(self) -> bool:
        """Whether ``opts.time_limit_s`` has passed, decided by rank 0 for every process (so that no rank
        waits in a collective for one that stopped)."""
        if self.opts.time_limit_s is None:
            return False
        stop = torch.tensor([float(time.perf_counter() - self.started > self.opts.time_limit_s)])
        if self.env.world > 1:
            stop = stop.to(self.env.device)
            dist.broadcast(stop, src=0)
        return bool(stop.item())

    def pause(self, done: int) -> Path:
        """Stop at iteration ``done`` within the time limit: ``last.pt`` holds everything to resume."""
        if self.env.main:
            if self.log_rows:
                _append_csv(self.opts.out / "metrics.csv", self.log_rows)
                self.log_rows = []
            self._save_last(done)
            _LOG.info("time limit of %.0f s reached at iteration %d/%d: %s holds the run, the same command "
                      "resumes it", self.opts.time_limit_s, done, self.iters, self.last)
        return self.last

    def step(self, step: int, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float], float]:
        """One optimisation step on a batch of pairs; returns (loss, its weighted components, gradient norm)."""
        device = self.env.device
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * lr_factor(step, self.cfg)
        key = batch["key_image"].to(device, non_blocking=True).float()
        ref = batch["ref_image"].to(device, non_blocking=True).float()
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp):
            key_out, ref_out = self.model(key, ref)
        # The criterion moves the (CPU, collated) targets to the outputs' device.
        loss, parts = self.criterion(_float_outputs(key_out), _float_outputs(ref_out), batch["key_targets"],
                                     batch["ref_targets"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at iteration {step}: lower train.lr or check data")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.train.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.net)
        return loss, parts, grad_norm

    def record(self, done: int, loss: float, parts: dict[str, float], grad_norm: float) -> dict[str, float]:
        """Rank 0 after iteration ``done``: the metrics row, and the log line, checkpoint and validation due."""
        t = self.cfg.train
        row = {"time_s": round(self._seconds(), 2), "step": done,
               "lr": self.optimizer.param_groups[1]["lr"], "loss": loss, "grad_norm": grad_norm,
               **{k: float(v) for k, v in parts.items()}}
        self.log_rows.append(row)
        final = done == self.iters
        if done % t.log_every == 0 or final:
            elapsed = time.perf_counter() - self.started
            rate = (done - self.start) * 2 * t.batch_size * self.env.world / elapsed  # two frames per pair
            _append_csv(self.opts.out / "metrics.csv", self.log_rows)
            self.log_rows = []
            _LOG.info("it %d/%d loss %.4f lr %.2e grad %.2f (%.1f frames/s)", done, self.iters, loss, row["lr"],
                      grad_norm, rate)
        if done % t.checkpoint_every == 0 or final:
            self._save_last(done)
        if self.held_out and ((t.val_every and done % t.val_every == 0) or final):
            self.validate(done)
        return row

    def validate(self, done: int) -> None:
        """Score the weights ``model.pt`` would hold (rank 0), append to ``val.csv`` and return to training mode.

        With a weight average, the average is scored as the run's result and the raw weights on the held-out
        sequences beside it (``raw_*`` columns), so the log shows what the average gains.
        """
        shipped = self.ema.net if self.ema is not None else self.net
        row = _validate(shipped, self.cfg, self.env.device, self.held_out, self.seen, self.opts.progress)
        raw = ""
        if self.ema is not None:
            scores = _validate(self.net, self.cfg, self.env.device, self.held_out, [], self.opts.progress)
            row |= {f"raw_{k}": v for k, v in scores.items()}
            raw = f" | raw weights STQ {scores['STQ']:.4f} (average {row['STQ'] - scores['STQ']:+.4f})"
        _train_mode(self.net, self.cfg)
        _append_csv(self.opts.out / "val.csv", [{"time_s": round(self._seconds(), 2), "step": done, **row}])
        _LOG.info("validation at %d: held-out STQ %.4f AQ %.4f SQ %.4f%s%s", done, row["STQ"], row["AQ"], row["SQ"],
                  f" | training scenes STQ {row['train_STQ']:.4f} AQ {row['train_AQ']:.4f} SQ "
                  f"{row['train_SQ']:.4f} | gap {row['gap_STQ']:+.4f}" if self.seen else "", raw)

    def finish(self) -> Path:
        """Check that DDP replicas agree, then write ``out/model.pt`` (rank 0; the weight average when the run
        keeps one); return its path."""
        final = self.opts.out / "model.pt"
        if self.env.world > 1:
            _check_replicas(self.net, self.env, self.opts.out)
        if self.env.main:
            seconds = self._seconds()
            average = {} if self.ema is None else {"ema_decay": self.ema.decay, "ema_updates": self.ema.updates}
            save_checkpoint(final, self.net if self.ema is None else self.ema.net, self.cfg, step=self.iters,
                            train_seconds=seconds, scenes_after=self._scenes_after(self.iters), **average)
            if self.ema is not None:
                _LOG.info("%s holds the moving average of the weights (decay %g, %d updates); last.pt the raw "
                          "weights", final, self.ema.decay, self.ema.updates)
            _LOG.info("wrote %s after %d iterations (%.0f s of training, %.0f s of them in this sitting)", final,
                      self.iters, seconds, seconds - self.seconds_before)
        return final


def _initial_net(cfg: VKNetConfig, opts: RunOptions, env: _Distributed) -> tuple[VKNet, int]:
    """The network on ``env.device`` with the weights the run starts from (``--init``, ImageNet backbone or
    random), and the synthetic scene numbers below which those weights were trained on (0 unless ``--init``)."""
    net = build_model(cfg).to(env.device)
    scene_base = 0
    if opts.init is not None:
        init_cfg, init_net, init_payload = load_checkpoint(opts.init)
        difference = model_difference(init_cfg, cfg)
        if difference and not _growable(init_cfg, cfg):
            raise CheckpointError(f"--init {opts.init} holds another network than this config's ({difference}): "
                                  "start from weights of the same model (or of one with fewer num_stages, "
                                  "fewer num_proposals or half the backbone_width)")
        if difference:
            growth = grow_into(net, init_net)
            if env.main:
                _LOG.info("%s", growth.summary())
        else:
            net.load_state_dict(init_net.state_dict())
        scene_base = scenes_trained_on(init_payload)
        _LOG.info("initialised from %s (config %s, synthetic scenes below %d already seen)", opts.init,
                  init_cfg.hash(), scene_base)
    elif opts.backbone_weights is not None:
        report = load_torchvision_resnet(net.backbone, opts.backbone_weights)
        if env.main:
            _LOG.info("%s", report.summary())
    if cfg.model.backbone_norm == "frozen_bn":
        freeze_batchnorm(net.backbone)  # before the optimiser: frozen affine parameters are no parameters to it
    return net, scene_base


def _replicated(model: nn.Module, env: _Distributed) -> nn.Module:
    """``model`` wrapped in DDP under torchrun, as it is in a single process."""
    if env.world == 1:
        return model
    device_ids = [env.device] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _training_batches(cfg: VKNetConfig, opts: RunOptions, env: _Distributed, *, start: int,
                      first_scene: int) -> tuple[Iterator[dict[str, Any]], str]:
    """Endless collated batches for a run resuming at iteration ``start``, and a phrase naming their source.

    Synthetic scenes are numbered from ``first_scene`` (past every scene the weights may have seen); a dataset
    is reshuffled every epoch, from the epoch that iteration ``start`` falls in.
    """
    t = cfg.train
    augment = AugmentConfig(crop=(t.crop[0], t.crop[1]), scale_range=(t.scale_range[0], t.scale_range[1]),
                            flip=t.flip, base_scale=t.input_scale)
    collate = PairCollate(cfg.data, (t.crop[0] // t.loss_stride, t.crop[1] // t.loss_stride))
    workers = t.workers if opts.workers is None else opts.workers
    if opts.synthetic:
        stream = SyntheticPairStream(synth=SynthConfig(frames=SCENE_FRAMES), augment=augment,
                                     ref_offsets=t.ref_offsets, label_divisor=cfg.data.label_divisor,
                                     first_scene=first_scene, rank=env.rank, world=env.world, seed=t.seed)
        loader: DataLoader[dict[str, np.ndarray]] = DataLoader(
            stream, batch_size=t.batch_size, num_workers=workers, collate_fn=collate,
            worker_init_fn=single_thread_worker, persistent_workers=workers > 0)
        return iter(loader), f"fresh synthetic scenes (seed {TRAIN_SCENE_SEED}, from scene {first_scene})"
    if opts.data is None:
        raise ValueError("--data is required unless training on --synthetic scenes")
    sequences = kitti_step_sequences(opts.data, opts.split, cfg.data.label_divisor)
    dataset = FramePairDataset(sequences, ref_offsets=t.ref_offsets, augment=augment,
                               label_divisor=cfg.data.label_divisor, seed=t.seed + env.rank)
    sampler: DistributedSampler[dict[str, np.ndarray]] = DistributedSampler(
        dataset, num_replicas=env.world, rank=env.rank, shuffle=True, seed=t.seed)
    loader = DataLoader(
        dataset, batch_size=t.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        worker_init_fn=_seed_worker, drop_last=True, persistent_workers=workers > 0)
    batches = _batches(loader, sampler, start_epoch=start * t.batch_size * env.world // max(1, len(dataset)))
    return batches, f"{len(sequences)} sequences / {len(dataset)} frames"


def _check_replicas(net: nn.Module, env: _Distributed, out: Path) -> None:
    """Gather every rank's weight digest; rank 0 writes ``replicas.txt`` and raises if they differ."""
    checksums: list[str | None] = [None] * env.world
    dist.all_gather_object(checksums, weights_checksum(net))
    if env.main:
        identical = len(set(checksums)) == 1
        (out / "replicas.txt").write_text("\n".join(f"rank {r}: {c}" for r, c in enumerate(checksums))
                                          + f"\nidentical: {identical}\n")
        if not identical:
            raise RuntimeError(f"DDP replicas diverged: {checksums}")


def _float_outputs(out: KernelOutputs) -> KernelOutputs:
    """Losses in fp32 whatever autocast produced (focal and dice terms underflow in fp16)."""
    return KernelOutputs([c.float() for c in out.cls_logits], [m.float() for m in out.mask_logits],
                         out.sem_logits.float(), out.kernels.float(), out.embeddings.float())


def _train_mode(net: VKNet, cfg: VKNetConfig) -> None:
    """Training mode, with a frozen-BN backbone's statistics kept as loaded (``model.backbone_norm``)."""
    net.train()
    if cfg.model.backbone_norm == "frozen_bn":
        freeze_batchnorm(net.backbone)


def _validate(net: VKNet, cfg: VKNetConfig, device: torch.device, held_out: list[VideoSequence],
              seen: list[VideoSequence], progress: bool) -> dict[str, float]:
    """STQ/AQ/SQ on held-out sequences and, when given, on training scenes (the train/held-out gap)."""
    pipeline = Pipeline(TorchBackend(build_frame_net(cfg, net), cfg, device))
    row = evaluate_stq(pipeline, held_out, cfg.data, progress=progress)
    if seen:
        train_scores = evaluate_stq(pipeline, seen, cfg.data, progress=progress)
        row |= {f"train_{k}": v for k, v in train_scores.items()}
        row["gap_STQ"] = train_scores["STQ"] - row["STQ"]
    return row


def _validation_sets(opts: RunOptions, cfg: VKNetConfig) -> tuple[list[VideoSequence], list[VideoSequence]]:
    """(held-out sequences, training sequences) to validate on.

    From ``--data``: its validation split and the first sequences of the training split. Synthetic training
    without ``--data`` generates both into ``out/validation``: held-out scenes (``write_held_out``: never a
    training seed) and the first scenes of the training stream, which it has trained on.
    """
    if not opts.val_split:
        return [], []
    count = opts.val_sequences
    if opts.synthetic and opts.data is None:
        root = opts.out / "validation"
        count = count or 2
        if not (root / "images" / "val").is_dir():
            write_held_out(root, sequences=count, frames=SCENE_FRAMES)
            write_sequences(root, sequences=count, seed=TRAIN_SCENE_SEED, split="train",
                            cfg=SynthConfig(frames=SCENE_FRAMES), progress=False)
        data = root
    else:
        if opts.data is None:
            return [], []
        data = opts.data
        if not (data / "images" / opts.val_split).is_dir():
            _LOG.warning("no %s split in %s: training without validation", opts.val_split, data)
            return [], []
    held_out = kitti_step_sequences(data, opts.val_split, cfg.data.label_divisor)
    seen = kitti_step_sequences(data, opts.split, cfg.data.label_divisor) if (data / "images" / opts.split).is_dir() \
        else []
    if count:
        held_out, seen = held_out[:count], seen[:count]
    return held_out, seen[: len(held_out)]


def _append_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """Append ``rows`` (each with its own ``time_s``: seconds of training in the whole run so far) to a CSV file."""
    if not rows:
        return
    fields = list(rows[0].keys())
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
