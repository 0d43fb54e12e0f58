"""A ranked search result as a named record (what front ends print and publish)."""
from __future__ import annotations

from dataclasses import dataclass

from vpr_core.mapdb.pose import Pose


@dataclass(frozen=True)
class PlaceMatch:
    """One map place matched by a query.

    ``rank`` is 0 for the best match; ``score`` is higher-is-better (cosine similarity,
    or 1 - 2 h / bits for binary codes, or a sequence score); ``distance`` is lower-is-better
    (squared L2 between unit floats, or Hamming bits); ``index`` is the row in the map;
    ``position`` / ``orientation`` are the stored pose in the map frame, ``stamp_ns`` the time
    the place was recorded.
    """

    place_id: int
    rank: int
    score: float
    distance: float
    index: int
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    stamp_ns: int

    @property
    def pose(self) -> Pose:
        """The stored pose as a :class:`Pose`."""
        return Pose(self.position, self.orientation)

    @property
    def stamp(self) -> float:
        """Recording time in seconds."""
        return self.stamp_ns / 1e9
