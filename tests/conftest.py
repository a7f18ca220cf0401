"""Test-wide settings: every ROS 2 participant started by the suite stays on loopback.

This runs before any test module imports rclpy, so the variables are in place for rclpy.init() in this
process and are inherited by every child process the tests start. Each pytest run draws its own
ROS_DOMAIN_ID, whatever the calling shell had, so parallel runs never hear each other.
"""

from __future__ import annotations

import os

from vknet_ros.dds_env import loopback_environment

os.environ.update(loopback_environment())
