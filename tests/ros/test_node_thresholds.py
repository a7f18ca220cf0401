"""The node runs a model with the model's own thresholds; a parameter replaces only what a user sets."""

from __future__ import annotations

import dataclasses

from vknet_model.backends.torch_backend import TorchBackend
from vknet_model.config import config_from_dict, resolve_config
from vknet_model.network import build_frame_net
from vknet_model.pipeline import Pipeline
from vknet_ros.node import apply_thresholds
from vknet_ros.node_settings import MODEL_VALUE, settings_from_values, validate_dynamic


def _pipeline_of_a_model_with_its_own_thresholds() -> Pipeline:
    values = resolve_config("tiny").to_dict()
    values["postprocess"] = {"instance_score_thr": 0.4, "overlap_thr": 0.7, "mask_thr": 0.45}
    values["tracker"] = {**values["tracker"], "init_score_thr": 0.5, "reset_gap_s": 2.5}
    cfg = config_from_dict(values)
    return Pipeline(TorchBackend(build_frame_net(cfg).eval(), cfg, "cpu"))


def test_defaults_are_the_models_thresholds() -> None:
    pipeline = _pipeline_of_a_model_with_its_own_thresholds()
    pipeline.set_postprocess(dataclasses.replace(pipeline.postprocess, instance_score_thr=0.1))  # anything
    apply_thresholds(pipeline, settings_from_values({}))
    assert (pipeline.postprocess.instance_score_thr, pipeline.postprocess.overlap_thr,
            pipeline.postprocess.mask_thr) == (0.4, 0.7, 0.45)
    assert pipeline.tracker_config.init_score_thr == 0.5 and pipeline.tracker_config.reset_gap_s == 2.5
    assert pipeline.tracker_config.obj_score_thr == resolve_config("tiny").tracker.obj_score_thr


def test_a_set_parameter_replaces_only_itself_and_minus_one_restores_the_model() -> None:
    pipeline = _pipeline_of_a_model_with_its_own_thresholds()
    apply_thresholds(pipeline, settings_from_values({"overlap_thr": 0.2, "match_score_thr": 0.9,
                                                     "match_cosine_thr": 0.5}))
    assert pipeline.postprocess.overlap_thr == 0.2 and pipeline.postprocess.instance_score_thr == 0.4
    assert pipeline.tracker_config.match_score_thr == 0.9 and pipeline.tracker_config.init_score_thr == 0.5
    assert pipeline.tracker_config.match_cosine_thr == 0.5
    assert validate_dynamic("overlap_thr", -1) == MODEL_VALUE
    apply_thresholds(pipeline, settings_from_values({"overlap_thr": -1.0}))
    assert pipeline.postprocess.overlap_thr == 0.7
