"""Data: KITTI-STEP and Cityscapes-VPS readers, the synthetic KITTI-STEP generator and its training stream,
the panoptic PNG format."""
