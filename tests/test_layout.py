"""The import direction of the packages: model <- data <- evaluation <- {training, vknet_ros}, no cycle.

Every import counts, also the ones inside functions (the CLI modules import heavy packages lazily), so a
new edge against the direction fails here whatever its form.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vknet_model", "vknet_data", "vknet_eval", "training", "vknet_ros")
# package -> the packages of ours it may import.
ALLOWED = {
    "vknet_model": set(),
    "vknet_data": {"vknet_model"},
    "vknet_eval": {"vknet_model", "vknet_data"},
    "training": {"vknet_model", "vknet_data", "vknet_eval"},
    "vknet_ros": {"vknet_model", "vknet_data", "vknet_eval"},
}
ROS = ("rclpy", "launch", "launch_ros", "sensor_msgs", "std_msgs", "vision_msgs", "rosbags")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def package_edges() -> dict[str, dict[str, set[str]]]:
    """package -> imported top-level name -> the files that import it."""
    edges: dict[str, dict[str, set[str]]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in imported_modules(path):
                top = module.split(".")[0]
                edges.setdefault(package, {}).setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return edges


def test_packages_import_only_in_the_allowed_direction() -> None:
    edges = package_edges()
    wrong = {f"{package} -> {target} ({', '.join(sorted(files))})"
             for package, targets in edges.items() for target, files in targets.items()
             if target in PACKAGES and target != package and target not in ALLOWED[package]}
    assert not wrong, "against model <- data <- evaluation <- {training, vknet_ros}:\n" + "\n".join(sorted(wrong))


def test_the_model_package_needs_no_ros_and_no_training() -> None:
    targets = package_edges()["vknet_model"]
    assert not {t for t in targets if t in ROS}, {t: targets[t] for t in targets if t in ROS}
    assert not {t for t in targets if t in PACKAGES and t != "vknet_model"}


def test_the_allowed_graph_itself_has_no_cycle() -> None:
    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in ALLOWED[start])

    assert not [p for p in PACKAGES if reaches(p, p)]


def test_the_command_line_and_the_backend_names_load_no_torch() -> None:
    # `vknet --help` builds every subcommand's parser; the backend choices come from vknet_model.backends.
    code = ("import sys, vknet_cli; vknet_cli.build_parser(); from vknet_model.backends import BACKENDS; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
