"""DDS settings that keep ROS 2 traffic on this machine and let camera-sized messages through.

Used by the tests, the demo and ``vknet doctor``; a deployed node takes whatever environment the user
gives it. Kilted ignores ``ROS_LOCALHOST_ONLY``: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` is what stops
discovery multicast from leaving the host, and a per-run ``ROS_DOMAIN_ID`` keeps parallel runs apart.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from vknet_model.errors import VKNetError

PROFILE_NAME = "fastdds_loopback.xml"
# Fast DDS maps domain ids to UDP ports; on Linux the ids whose ports stay clear of the ephemeral range are
# 0-101 and 215-232 (what ROS 2's domain-id documentation allows). Random ids are drawn from the first range.
DOMAIN_ID_RANGES = (range(0, 102), range(215, 233))


class DomainIdError(VKNetError, ValueError):
    """A ROS_DOMAIN_ID this machine's DDS cannot use."""


def check_domain_id(value: int | str) -> int:
    """``value`` as a domain id if ROS 2 accepts it on Linux; DomainIdError with the valid ranges otherwise."""
    try:
        domain_id = int(value)
    except ValueError:
        domain_id = -1
    if not any(domain_id in r for r in DOMAIN_ID_RANGES):
        raise DomainIdError(f"ROS_DOMAIN_ID {value!r} is not usable: on Linux it must be 0-101 or 215-232")
    return domain_id


def profile_path() -> Path:
    """Locate the shipped Fast DDS profile: package data beside this module (source tree, wheel, colcon's
    site-packages), else the ament share directory."""
    source = Path(__file__).resolve().parent / "config" / PROFILE_NAME
    if source.is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("vknet_ros")) / "config" / PROFILE_NAME
    except (ImportError, LookupError, ValueError) as exc:
        raise FileNotFoundError(f"{PROFILE_NAME} not found beside the vknet_ros package and vknet_ros is not "
                                f"installed in an ament prefix ({exc})") from exc
    if not installed.is_file():
        raise FileNotFoundError(f"{installed} is missing: reinstall vknet_ros")
    return installed


def loopback_environment(domain_id: int | None = None) -> dict[str, str]:
    """Environment variables for a loopback-only ROS 2 run with large-message support.

    Args:
        domain_id: ROS_DOMAIN_ID to use; a random id in [1, 101] when None, so concurrent runs on one
            machine do not see each other.

    Raises:
        DomainIdError: an id ROS 2 does not accept on Linux.
    """
    if domain_id is None:
        domain_id = random.SystemRandom().randint(1, DOMAIN_ID_RANGES[0][-1])
    check_domain_id(domain_id)
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(domain_id),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(profile_path()),
    }


def apply_loopback_environment(domain_id: int | None = None) -> dict[str, str]:
    """Set :func:`loopback_environment` in ``os.environ`` (before rclpy.init) and return it.

    A ``ROS_DOMAIN_ID`` already set by the caller is kept, so a parent process can hand its id down.
    """
    if domain_id is None and os.environ.get("ROS_DOMAIN_ID", "").strip():
        domain_id = check_domain_id(os.environ["ROS_DOMAIN_ID"].strip())
    env = loopback_environment(domain_id)
    os.environ.update(env)
    return env
