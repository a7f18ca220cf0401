"""The input image subscription's QoS: the one the user set, or one that matches the camera's publishers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from vknet_ros.node_settings import NodeSettings


def input_qos(settings: NodeSettings, publishers: Sequence[Any] = ()) -> QoSProfile:
    """The image subscription's QoS; ``publishers`` (rclpy TopicEndpointInfo) are the camera's, for auto."""
    if settings.input_qos == "auto":
        return matching_qos(publishers, settings.input_depth)
    if settings.input_qos == "sensor_data":
        qos = QoSProfile(**{k: getattr(qos_profile_sensor_data, k) for k in ("history", "reliability", "durability")},
                         depth=settings.input_depth)
    else:
        reliability = ReliabilityPolicy.RELIABLE if settings.input_qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=settings.input_depth, reliability=reliability)
    return qos


def matching_qos(publishers: Sequence[Any], depth: int) -> QoSProfile:
    """A subscription QoS that matches every publisher and gets the most they offer: reliable only if all are
    reliable (a reliable reader never matches a best-effort writer), transient local only if all are. No
    publisher yet: best effort and volatile, which match anything that comes."""
    profiles = [p.qos_profile for p in publishers]
    reliable = bool(profiles) and all(q.reliability == ReliabilityPolicy.RELIABLE for q in profiles)
    latched = bool(profiles) and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in profiles)
    return QoSProfile(depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def describe_qos(qos: QoSProfile) -> str:
    return f"{qos.reliability.name.lower()}, {qos.durability.name.lower()}, depth {qos.depth}"
