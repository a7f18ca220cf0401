"""Fixtures of the ROS tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def rclpy_context() -> Iterator[None]:
    """rclpy's default context for one test module (its nodes live in it), shut down after the module.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("rclpy_context")``."""
    import rclpy

    rclpy.init()
    yield
    rclpy.shutdown()
