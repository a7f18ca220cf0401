"""Loopback DDS settings: the domain ids ROS 2 accepts on Linux, and one clear error for the others."""

from __future__ import annotations

import pytest

from vknet_ros.dds_env import DomainIdError, apply_loopback_environment, check_domain_id, loopback_environment


@pytest.mark.parametrize("value", [0, 101, 215, 232, "42", " 7 "])
def test_ids_ros2_accepts_on_linux_are_used(value: int | str) -> None:
    assert check_domain_id(value) == int(value)


@pytest.mark.parametrize("value", [-1, 102, 150, 214, 233, "abc", ""])
def test_other_ids_are_refused_with_the_valid_ranges(value: int | str) -> None:
    with pytest.raises(DomainIdError, match="0-101 or 215-232"):
        check_domain_id(value)


def test_the_environment_keeps_a_valid_caller_id_and_refuses_a_bad_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", "220")
    assert apply_loopback_environment()["ROS_DOMAIN_ID"] == "220"
    monkeypatch.setenv("ROS_DOMAIN_ID", "150")
    with pytest.raises(DomainIdError):
        apply_loopback_environment()
    assert 1 <= int(loopback_environment()["ROS_DOMAIN_ID"]) <= 101


def test_a_command_given_a_bad_id_ends_with_one_error_line(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from vknet_cli import main

    monkeypatch.setenv("ROS_DOMAIN_ID", "150")
    assert main(["node", "--loopback"]) == 2  # a ValueError traceback before
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: ROS_DOMAIN_ID '150' is not usable: on Linux it must be 0-101 or "
                                        "215-232"]
    assert main(["-v", "node", "--loopback"]) == 2
    assert "Traceback" in capsys.readouterr().err  # the details under -v
