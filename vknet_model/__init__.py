"""Video K-Net: the network, panoptic assembly, tracker, backends and pipeline (no ROS, no side effects)."""

__version__ = "0.1.0"
