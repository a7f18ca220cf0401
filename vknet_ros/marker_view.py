"""Draw the node's RViz markers as RViz shows them from above: a bird's-eye view of the camera's optical
frame (x right, z forward), for pictures and checks where no RViz runs.

Reads the same ``visualization_msgs/MarkerArray`` the node publishes (spheres, labels and velocity arrows of
placed things; box outlines of unplaced ones on the z = 1 m plane), so the picture shows what a user sees,
not a second rendering of the data.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

BACKGROUND = (40, 40, 40)
GRID = (90, 90, 90)
FRUSTUM = (160, 160, 160)


def draw_top_view(markers: Any, height: int, width: int, *, range_m: float = 40.0,
                  horizontal_fov: tuple[float, float] | None = None) -> np.ndarray:
    """BGR uint8 [height, width, 3]: the camera at the bottom centre looking up, ``range_m`` forward at the top,
    rings every 5 m (10 m beyond a 30 m range). ``horizontal_fov`` (the x/z slopes of the image's left and
    right edges, e.g. ((0 - cx) / fx, (w - cx) / fx)) draws the camera's field of view."""
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    scale = (height - 20) / range_m  # pixels per metre
    origin = (width // 2, height - 10)

    def pixel(x: float, z: float) -> tuple[int, int]:
        return round(origin[0] + x * scale), round(origin[1] - z * scale)

    step = 5 if range_m <= 30 else 10
    for ring in range(step, int(range_m) + 1, step):
        cv2.circle(canvas, origin, int(ring * scale), GRID, 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{ring} m", pixel(0.3, ring + 0.3), cv2.FONT_HERSHEY_SIMPLEX, 0.4, GRID, 1, cv2.LINE_AA)
    if horizontal_fov is not None:
        for slope in horizontal_fov:
            cv2.line(canvas, origin, pixel(slope * range_m, range_m), FRUSTUM, 1, cv2.LINE_AA)
    for marker in markers.markers:
        if marker.action != marker.ADD:
            continue
        colour = tuple(int(255 * c) for c in (marker.color.b, marker.color.g, marker.color.r))
        p = marker.pose.position
        if marker.type == marker.SPHERE:
            cv2.circle(canvas, pixel(p.x, p.z), max(2, int(marker.scale.x / 2 * scale)), colour, -1, cv2.LINE_AA)
        elif marker.type == marker.TEXT_VIEW_FACING:
            cv2.putText(canvas, marker.text, pixel(p.x + 0.6, p.z), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                        cv2.LINE_AA)
        elif marker.type == marker.ARROW and len(marker.points) == 2:
            a, b = marker.points
            cv2.arrowedLine(canvas, pixel(a.x, a.z), pixel(b.x, b.z), colour, 2, cv2.LINE_AA, tipLength=0.3)
        elif marker.type == marker.LINE_STRIP and marker.points:
            points = np.array([pixel(q.x, q.z) for q in marker.points], np.int32)
            cv2.polylines(canvas, [points], False, colour, 1, cv2.LINE_AA)
    return canvas
