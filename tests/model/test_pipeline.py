"""The framework-free Pipeline: geometry at the input resolution, tracking state, resets, backend parity."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vknet_data.synth import SynthConfig, render_sequence
from vknet_model.backends.onnxruntime_backend import OnnxRuntimeBackend
from vknet_model.backends.torch_backend import TorchBackend
from vknet_model.bundled import BUNDLED_MODEL, BUNDLED_ONNX
from vknet_model.config import PostprocessConfig
from vknet_model.network import VKNetOutput
from vknet_model.pipeline import InstancePool, Pipeline, PipelineError, _Geometry
from vknet_model.preprocess import Letterbox

# The bundled (trained) model on a synthetic street sequence it never saw: real cars and people to track.
STREET = render_sequence(0, 2001, SynthConfig(frames=5))[0]


def street(t: int, size: tuple[int, int] = (375, 1242)) -> np.ndarray:
    image = STREET[t]
    return image if image.shape[:2] == size else cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


@pytest.fixture()
def torch_pipeline() -> Pipeline:
    return Pipeline(TorchBackend.from_checkpoint(BUNDLED_MODEL))


@pytest.mark.parametrize("size", [(375, 1242), (97, 203), (480, 640)])
def test_outputs_are_at_input_resolution_and_consistent(torch_pipeline: Pipeline, size: tuple[int, int]) -> None:
    h, w = size
    result = torch_pipeline.step(street(2, (h, w)), stamp=0.0, frame_id="cam")
    divisor = torch_pipeline.data.label_divisor
    assert result.panoptic.shape == (h, w) and result.panoptic.dtype == np.int32
    assert result.semantic.shape == (h, w) and result.semantic.dtype == np.uint8
    assert np.array_equal(result.semantic, result.panoptic // divisor)
    assert set(np.unique(result.semantic)) <= set(range(19)) | {255}
    # Every thing pixel carries an instance (or is void): never class 11 or 13 with instance 0.
    things = np.isin(result.semantic, (11, 13))
    assert (result.panoptic[things] % divisor > 0).all()
    assert result.objects, "the street frame has cars and people to track"
    for obj in result.objects:
        assert 1 <= obj.instance < divisor and obj.class_id in (11, 13)
        pixels = np.argwhere(result.panoptic == obj.class_id * divisor + obj.instance)
        # Areas and centroids are computed on the merge grid but must be exact at the input resolution.
        assert obj.mask_area == len(pixels)
        np.testing.assert_allclose(obj.centroid, (pixels[:, 1].mean(), pixels[:, 0].mean()), atol=1e-6)
        x1, y1, x2, y2 = obj.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert x1 <= pixels[:, 1].min() + 1 and pixels[:, 1].max() <= x2 + 1
    instances = [o.instance for o in result.objects]
    assert len(set(instances)) == len(instances)


def test_panoptic_in_a_message_dtype_holds_the_same_ids(torch_pipeline: Pipeline) -> None:
    narrow = Pipeline(torch_pipeline.backend, panoptic_dtype=np.uint16)
    wide = torch_pipeline.step(street(1), stamp=0.0, frame_id="cam")
    got = narrow.step(street(1), stamp=0.0, frame_id="cam")
    assert got.panoptic.dtype == np.uint16
    # Void is 255 * 1000 in int32, which 16 bits cannot hold: there it is 65535; every other id is the same.
    assert narrow.void_panoptic == 65535 and torch_pipeline.void_panoptic == 255_000
    void = wide.panoptic == 255_000
    assert np.array_equal(got.panoptic == 65535, void)
    assert np.array_equal(got.panoptic[~void], wide.panoptic[~void])
    assert "semantic" not in vars(got), "the semantic map is built on first use, not in step()"
    assert np.array_equal(got.semantic, wide.semantic)
    with pytest.raises(ValueError, match="more than uint8 holds"):
        Pipeline(torch_pipeline.backend, panoptic_dtype=np.uint8)
    with pytest.raises(ValueError, match="more than uint16 holds"):
        Pipeline(torch_pipeline.backend, panoptic_dtype=np.uint16, label_divisor=4000)
    with pytest.raises(ValueError, match="integer dtype"):
        Pipeline(torch_pipeline.backend, panoptic_dtype=np.float32)


@pytest.mark.parametrize("source", [(375, 1242), (97, 203), (480, 640), (1, 1), (2000, 50)])
def test_upsampling_is_the_nearest_cell_of_every_pixel(source: tuple[int, int]) -> None:
    geometry = _Geometry(Letterbox.fit(source, (192, 640)), 4)
    cells = np.random.default_rng(0).integers(0, 19_000, (48, 160)).astype(np.int32)
    expected = cells[geometry.rows[:, None], geometry.cols[None, :]]
    assert np.array_equal(geometry.upsample(cells), expected) and expected.shape == source


def test_warm_up_leaves_the_video_state_alone(torch_pipeline: Pipeline) -> None:
    fresh = Pipeline(TorchBackend.from_checkpoint(BUNDLED_MODEL))
    assert torch_pipeline.warm_up(runs=2) > 0
    for t in range(3):
        a = torch_pipeline.step(street(t), stamp=0.1 * t, frame_id="cam")
        b = fresh.step(street(t), stamp=0.1 * t, frame_id="cam")
        assert a.reset_reason == b.reset_reason and np.array_equal(a.panoptic, b.panoptic)
        assert [o.track_id for o in a.objects] == [o.track_id for o in b.objects]


def test_tracks_persist_and_resets_follow_the_rules(torch_pipeline: Pipeline) -> None:
    p = torch_pipeline
    first = p.step(street(0), stamp=10.0, frame_id="cam")
    assert first.reset_reason == "start"
    ids0 = {o.track_id for o in first.objects}
    second = p.step(street(0), stamp=10.1, frame_id="cam")
    assert second.reset_reason == ""
    assert {o.track_id for o in second.objects} & ids0, "an unchanged frame keeps (some of) its track ids"
    assert all(o.age >= 1 for o in second.objects if o.track_id in ids0)
    assert "time jumped back" in p.step(street(0), stamp=5.0, frame_id="cam").reset_reason
    assert "gap of" in p.step(street(0), stamp=9.0, frame_id="cam").reset_reason
    after = p.step(street(0), stamp=9.1, frame_id="other")
    assert "frame_id changed" in after.reset_reason
    assert min(o.track_id for o in after.objects) > max(ids0), "track ids are never reused after a reset"
    p.reset("user")
    assert p.step(street(0), stamp=9.2, frame_id="other").reset_reason == "user"


def test_bad_images_raise_and_leave_the_state_alone(torch_pipeline: Pipeline) -> None:
    p = torch_pipeline
    p.step(street(0), stamp=1.0, frame_id="cam")
    for bad in (np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float64)):
        with pytest.raises(ValueError, match="image"):
            p.step(bad, stamp=1.05, frame_id="cam")
    assert p.step(street(1), stamp=1.1, frame_id="cam").reset_reason == ""


def test_thresholds_change_at_run_time(torch_pipeline: Pipeline) -> None:
    p = torch_pipeline
    assert p.step(street(0), stamp=0.0, frame_id="cam").objects
    p.set_postprocess(PostprocessConfig(instance_score_thr=0.99))
    assert not p.step(street(0), stamp=0.1, frame_id="cam").objects
    with pytest.raises(ValueError, match="overlap_thr"):
        p.set_postprocess(PostprocessConfig(overlap_thr=1.5))


def test_torch_and_onnxruntime_pipelines_agree_over_five_frames() -> None:
    pipes = [Pipeline(TorchBackend.from_checkpoint(BUNDLED_MODEL)), Pipeline(OnnxRuntimeBackend(BUNDLED_ONNX))]
    tracked = 0
    for t in range(5):
        image = street(t)
        a, b = (p.step(image, stamp=0.1 * t, frame_id="cam") for p in pipes)
        assert np.array_equal(a.panoptic, b.panoptic), f"panoptic maps differ on frame {t}"
        assert [o.track_id for o in a.objects] == [o.track_id for o in b.objects], f"track ids differ on frame {t}"
        assert [o.instance for o in a.objects] == [o.instance for o in b.objects]
        # 1e-3, not 1e-5: on one frame a mask logit within float error of the binarisation threshold moves a
        # score by 3.9e-5 (tests/model/test_parity.py); maps, ids and instances above are still exact.
        np.testing.assert_allclose([o.score for o in a.objects], [o.score for o in b.objects], atol=1e-3)
        tracked += len(a.objects)
    assert tracked > 0


def test_instance_pool_reuses_numbers_of_dead_tracks_only() -> None:
    pool = InstancePool(max_instance=3, hold_frames=2)
    assert pool.assign([100, 101], frame=0) == [1, 2]
    assert pool.assign([101, 102], frame=1) == [2, 3]     # 100 unseen for 1 frame: still holds 1
    with pytest.raises(PipelineError, match="more than 3 live tracks"):
        pool.assign([103], frame=1)
    assert pool.assign([103], frame=2) == [1]             # 100 unseen for 2 frames: 1 is free again
    assert pool.assign([101, 103], frame=3) == [2, 1]
    pool.clear()
    assert pool.assign([200], frame=0) == [1]


def test_a_bgr_frame_gives_the_results_of_the_same_rgb_frame() -> None:
    backend = TorchBackend.from_checkpoint(BUNDLED_MODEL)
    rgb_pipe, bgr_pipe = Pipeline(backend), Pipeline(backend)
    for t in range(2):
        a = rgb_pipe.step(street(t), stamp=0.1 * t, frame_id="cam")
        b = bgr_pipe.step(np.ascontiguousarray(street(t)[:, :, ::-1]), stamp=0.1 * t, frame_id="cam",
                          channel_order="bgr")
        assert a.objects and np.array_equal(a.panoptic, b.panoptic) and a.objects == b.objects
        assert np.array_equal(a.panoptic_cells, b.panoptic_cells)
        assert np.array_equal(a.upsample(a.panoptic_cells), a.panoptic)


def test_the_pipeline_leaves_reporting_resets_to_its_caller(torch_pipeline: Pipeline,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Under `vknet node` (logging at INFO) each reset was logged twice: by the pipeline and by the node."""
    caplog.set_level("INFO")
    result = torch_pipeline.step(street(0), stamp=0.0, frame_id="cam")
    assert result.reset_reason == "start"
    assert not [r for r in caplog.records if r.name == "vknet_model.pipeline" and r.levelname == "INFO"]


def test_a_duplicate_things_cells_join_the_track_it_duplicates(torch_pipeline: Pipeline) -> None:
    """A second kept slot on the same car (the tracker's duplicate rule: box IoU > 0.7) gets no track of its
    own; its cells must carry the first one's id (void there would cost SQ a whole class), its box included."""
    real = torch_pipeline.backend.infer
    forged: dict[str, int] = {}

    def with_duplicate(*args: torch.Tensor) -> VKNetOutput:
        out = real(*args)
        proposals = torch_pipeline.num_proposals
        keep, scores, labels = out.slot_keep.clone(), out.slot_scores.clone(), out.slot_labels.clone()
        boxes, slot_map = out.boxes.clone(), out.slot_map.clone()
        kept = [int(i) for i in torch.nonzero(keep[:proposals]).flatten()]
        a = max(kept, key=lambda i: int((slot_map == i).sum()))         # the largest kept thing
        b = next(i for i in range(proposals) if i not in kept)           # a thing slot the network did not keep
        keep[b], scores[b], labels[b] = True, scores[a] * 0.9, labels[a]
        boxes[b] = boxes[a] + torch.tensor([-4.0, -4.0, 4.0, 4.0])       # nearly the same box, a little larger
        rows = torch.nonzero((slot_map == a).any(dim=1)).flatten()
        lower = slot_map[int(rows[len(rows) // 2]):] == a                # its lower half goes to the duplicate
        slot_map[int(rows[len(rows) // 2]):][lower] = b
        forged.update(a=a, b=b)
        return out._replace(slot_keep=keep, slot_scores=scores, slot_labels=labels, boxes=boxes, slot_map=slot_map)

    plain = torch_pipeline.step(street(2), stamp=0.0, frame_id="cam")
    torch_pipeline.reset()
    torch_pipeline.backend.infer = with_duplicate  # type: ignore[method-assign]
    result = torch_pipeline.step(street(2), stamp=0.0, frame_id="cam")
    assert forged and not (result.panoptic == torch_pipeline.void_panoptic).any()
    # The duplicate's cells read as the first slot's segment: the same map as without the duplicate ...
    assert np.array_equal(result.panoptic, plain.panoptic)
    # ... one object for the car, with the same pixels and a box that covers the duplicate's too.
    assert len(result.objects) == len(plain.objects)
    changed = [(o, p) for o, p in zip(result.objects, plain.objects, strict=True) if o.box != p.box]
    assert len(changed) == 1
    grown, before = changed[0]
    assert (grown.instance, grown.mask_area) == (before.instance, before.mask_area)
    assert grown.box[0] < before.box[0] and grown.box[2] > before.box[2]
