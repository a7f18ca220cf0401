"""BackgroundSpinner: callbacks run while it spins, none after stop(), and the executor is shut down."""

from __future__ import annotations

import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from vknet_ros.spinner import BackgroundSpinner


def test_spins_until_stopped_then_nothing_runs() -> None:
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("vknet_spinner_test", context=context)
    ticks: list[float] = []
    node.create_timer(0.01, lambda: ticks.append(time.monotonic()))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        spinner = BackgroundSpinner(executor)
        deadline = time.monotonic() + 5.0
        while len(ticks) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(ticks) >= 5, "the timer never fired while spinning"
        assert spinner.stop(timeout_s=2.0), "the spinning thread did not end"
        count = len(ticks)
        time.sleep(0.2)
        assert len(ticks) == count, "callbacks ran after stop()"
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
