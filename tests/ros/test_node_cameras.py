"""One node, three cameras, over real DDS: the model is loaded once and each camera keeps its own topics,
headers, tracker and track ids; a camera that stops does not stall the others."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from diagnostic_msgs.msg import DiagnosticArray

from tests.ros.node_client import RELIABLE, NodeClient, header, wait_for
from vknet_data.synth import SynthConfig, SyntheticScene

CAMERAS = ("front", "left", "right")
CFG = SynthConfig(frames=8, height=188, width=621)  # half KITTI size: the network input is the model's anyway


pytestmark = pytest.mark.usefixtures("rclpy_context")


@pytest.fixture(scope="module")
def client() -> Iterator[NodeClient]:
    c = NodeClient(CAMERAS, diagnostics_period_s=0.2)
    assert c.connected()
    yield c
    c.close()


def _round(c: NodeClient, t: int, cameras: tuple[str, ...], scenes: dict[str, SyntheticScene]) -> None:
    """Each camera sends frame t (its own stamp and frame_id) and gets its answer."""
    before = {name: len(c.cameras[name].tracks) for name in cameras}
    for i, name in enumerate(cameras):
        c.cameras[name].send(scenes[name].frame(t % CFG.frames)[0], header(10.0 + 0.1 * t + 0.01 * i, name))
    assert wait_for(lambda: all(len(c.cameras[n].tracks) > before[n] for n in cameras), 30.0), f"round {t}"


def test_each_camera_has_its_own_outputs_and_track_ids(client: NodeClient) -> None:
    scenes = {name: SyntheticScene(0, 1000 + i, CFG) for i, name in enumerate(CAMERAS)}
    node = client.node
    assert len({id(cam.pipeline.backend) for cam in node.cameras}) == 1, "the model must be loaded once"
    assert len({id(cam.pipeline.tracker) for cam in node.cameras}) == 3
    for t in range(6):
        _round(client, t, CAMERAS, scenes)
    ids: dict[str, set[int]] = {}
    for i, name in enumerate(CAMERAS):
        cam = client.cameras[name]
        assert {m.header.frame_id for m in cam.tracks + cam.panoptic} == {name}
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in cam.tracks]
        assert stamps == pytest.approx([10.0 + 0.1 * t + 0.01 * i for t in range(6)])
        ids[name] = {o.track_id for m in cam.tracks for o in m.objects}
        assert ids[name], f"{name}: the bundled model tracked nothing on a synthetic street"
        assert {track_id % 3 for track_id in ids[name]} == {i}
    assert not (ids["front"] & ids["left"]) and not (ids["front"] & ids["right"]) and not (ids["left"] & ids["right"])

    # left stops; front and right go on being answered, and left's state is untouched.
    left = node.cameras[1]
    processed = left.counters["processed"]
    for t in range(6, 10):
        _round(client, t, ("front", "right"), scenes)
    assert left.counters["processed"] == processed and left.counters["dropped"] == 0
    assert len(client.cameras["front"].tracks) == len(client.cameras["right"].tracks) == 10
    # ... and left comes back where it was.
    _round(client, 10, ("left",), scenes)
    assert left.counters["processed"] == processed + 1


def test_diagnostics_report_each_camera(client: NodeClient) -> None:
    got: list[DiagnosticArray] = []
    client.client.create_subscription(DiagnosticArray, "/diagnostics", got.append, RELIABLE)
    assert wait_for(lambda: bool(got) and all(len(a.status) == 3 for a in got[-1:]))
    names = [s.name for s in got[-1].status]
    assert names == [f"/vknet: {name} pipeline" for name in CAMERAS]
    for status in got[-1].status:
        values = {kv.key: kv.value for kv in status.values}
        assert int(values["processed"]) >= 1 and values["dropped"] == "0"


def test_camera_names_are_checked() -> None:
    from vknet_ros.node_settings import SettingsError, camera_names

    assert camera_names([]) == ("",) and camera_names(["front", "rear_2"]) == ("front", "rear_2")
    for bad in (["front", "front"], ["front", ""], ["2cam"], ["a/b"], ["ü"]):
        with pytest.raises(SettingsError, match="cameras"):
            camera_names(bad)


def test_the_worker_serves_every_waiting_camera_within_a_round() -> None:
    from vknet_ros.node import next_ready

    assert next_ready([False, True, True], 0) == 1 and next_ready([False, True, True], 2) == 2
    assert next_ready([True, False, True], 1) == 2 and next_ready([True, False, False], 1) == 0
    # front always has a new frame waiting (a fast camera): left and right are still served in turn.
    served, turn = [], 0
    waiting = [True, True, True]
    for _ in range(6):
        index = next_ready(waiting, turn)
        served.append(index)
        turn = index + 1
        waiting[index] = index == 0  # only front refills at once
        if not any(waiting[1:]) and len(served) == 3:
            waiting = [True, True, True]
    assert served[:3] == [0, 1, 2] and served.count(0) <= 4
