"""What the loop detector gives per frame: :class:`LoopResult`, with a :class:`LoopClosure`."""
from __future__ import annotations

from dataclasses import dataclass

from vpr_core.geometry.verification import Verification

REASONS = ('loop', 'not_keyframe', 'too_recent', 'low_score', 'inconsistent',
           'weak_evidence')


@dataclass(frozen=True)
class LoopClosure:
    """An accepted loop: keyframe ``query_index`` (this session) shows the place of keyframe
    ``match_index`` (indices into the detector's database, previous sessions first).

    ``match_session``: map id of the previous session holding the match ('' = this one);
    ``verification``: the geometric outcome (``accepted`` False with reason ``too_small``,
    ``no_features`` or ``off`` for a loop accepted unverified); ``candidates``: the rows
    considered, best first.
    """

    query_index: int
    match_index: int
    query_stamp_ns: int
    match_stamp_ns: int
    match_session: str
    place_id: int
    score: float
    verification: Verification
    candidates: list[int]

    @property
    def verified(self) -> bool:
        """True when local features confirmed the loop (it then has a relative pose)."""
        return bool(self.verification.accepted)


@dataclass(frozen=True)
class LoopResult:
    """What one frame gave: ``reason`` is 'loop' or why not (``REASONS`` or a verification
    reason); ``events``: 'clock_jump_back', 'invalid_odometry'."""

    stamp_ns: int
    keyframe: bool
    keyframe_index: int | None
    loop: LoopClosure | None
    reason: str
    events: tuple[str, ...] = ()
