"""Video panoptic segmentation metrics (numpy only): STQ for KITTI-STEP and VPQ for Cityscapes-VPS."""

from vknet_eval.metrics.stq import STQuality
from vknet_eval.metrics.vpq import VPQuality

__all__ = ["STQuality", "VPQuality"]
