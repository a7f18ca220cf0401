"""The argument checks STQ and VPQ share: a label space both metrics can place every id in."""

from __future__ import annotations

from collections.abc import Collection


def check_label_space(num_classes: int, things: Collection[int], ignore_label: int,
                      label_divisor: int) -> frozenset[int]:
    """Validate the metric's label space and return the thing classes as a set.

    Raises:
        ValueError: non-positive sizes, a negative void label, or a thing class outside the evaluated
            classes (or equal to the void label).
    """
    if num_classes <= 0 or label_divisor <= 0:
        raise ValueError(f"num_classes ({num_classes}) and label_divisor ({label_divisor}) must be positive")
    if ignore_label < 0:
        raise ValueError(f"ignore_label must be non-negative, got {ignore_label}")
    things_set = frozenset(int(c) for c in things)
    bad = sorted(c for c in things_set if not 0 <= c < num_classes or c == ignore_label)
    if bad:
        raise ValueError(f"thing classes {bad} are not evaluated classes in [0, {num_classes})")
    return things_set
