"""The Pareto frontier of accuracy against latency: the configurations nothing beats on both."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points no other point dominates, by increasing latency.

    q dominates p when q is no slower and no less accurate, and strictly better in one of the two. Ties: of points
    with equal latency only the most accurate can be on the front; identical points are all kept (neither dominates
    the other: both are equally good choices).
    """
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any((ql <= lat and qa >= acc) and (ql < lat or qa > acc) for ql, qa in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))
