"""Loop-closure settings: exclusion of the recent stretch, score gate, temporal consistency.

Every :class:`LoopConfig` field becomes a ROS parameter ``loops.<field>`` of the node's SLAM
mode (``loops.verify.<field>``, ``loops.keyframes.<field>`` for the nested ones). The
defaults were chosen on the Nordland train part as a two-pass stream (summer, then winter of
the same places), never on rtabmap_loop; see docs/experiments/loop_closure.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vpr_core.errors import ConfigError
from vpr_core.geometry.config import VerifyConfig
from vpr_core.mapdb.keyframe import KeyframeConfig


@dataclass(frozen=True)
class LoopConfig:
    """When a keyframe closes a loop with an earlier one.

    - ``min_time_gap_s`` / ``min_travel_gap_m``: keyframes of this session younger than
      this, or closer along the travelled path (when odometry is known), are never
      candidates: the recent stretch always looks like the present;
    - ``top_k``: candidates kept per keyframe (descriptor search), ``min_score`` the cosine
      similarity a candidate needs to be verified (the code similarity ``1 - 2 h / bits`` for
      a codes-only model): a floor only, geometry decides (0: more similar than unrelated
      images are on average, whose whitened descriptors centre at 0), ``rerank_k`` Hamming
      candidates re-ranked by the floats (0: automatic, as the map search);
    - ``consistency``: a loop needs this many consecutive keyframes whose candidates are
      neighbours (within ``consistency_window`` keyframes of each other) ending at it;
    - ``unverified_min_score`` / ``unverified_consistency``: when geometric verification
      steps aside (images below ``verify.min_image_side``, a match without stored features,
      or ``verify.features`` 'none') the descriptor alone decides: the best candidate must
      score at least this and be the best candidate of this many consecutive keyframes
      whose best candidates (each above the score) are neighbours; such a loop is accepted
      as unverified, without relative pose;
    - ``max_verifications``: consistent candidates verified per keyframe, best first;
    - ``evidence_inliers``: the geometric evidence a loop needs: a verified candidate with at
      least this many inliers is a loop at once; one with fewer (but at least
      ``verify.min_inliers``) is a loop only when the previous keyframe verified a
      neighbouring candidate (within ``consistency_window``) and the two inlier counts sum
      to at least this. Default twice ``verify.min_inliers``: one view at the bare
      threshold, where aliased corridors and facades still pass, is not enough;
    - ``verify``: local features and geometric thresholds; ``keyframes``: which frames become
      keyframes when odometry is given (without odometry every frame does, at most one per
      ``keyframes.min_interval_s``).
    """

    min_time_gap_s: float = 20.0
    min_travel_gap_m: float = 10.0
    top_k: int = 5
    min_score: float = 0.0
    unverified_min_score: float = 0.35
    rerank_k: int = 0
    consistency: int = 2
    consistency_window: int = 1
    unverified_consistency: int = 5
    max_verifications: int = 3
    evidence_inliers: int = 50
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)

    def __post_init__(self) -> None:
        if self.min_time_gap_s < 0 or self.min_travel_gap_m < 0:
            raise ConfigError('min_time_gap_s and min_travel_gap_m must be >= 0, got '
                              f'{self.min_time_gap_s}, {self.min_travel_gap_m}')
        if self.top_k < 1 or self.rerank_k < 0:
            raise ConfigError(f'top_k must be >= 1 and rerank_k >= 0, got {self.top_k}, '
                              f'{self.rerank_k}')
        if not -1.0 <= self.min_score <= self.unverified_min_score <= 1.0:
            raise ConfigError('min_score and unverified_min_score are cosine similarities, '
                              '-1 <= min_score <= unverified_min_score <= 1, got '
                              f'{self.min_score}, {self.unverified_min_score}')
        if self.consistency < 1 or self.consistency_window < 0:
            raise ConfigError('consistency must be >= 1 and consistency_window >= 0, got '
                              f'{self.consistency}, {self.consistency_window}')
        if self.unverified_consistency < self.consistency:
            raise ConfigError('unverified_consistency must be >= consistency (a loop nobody '
                              f'verified needs more support), got {self.unverified_consistency}'
                              f' < {self.consistency}')
        if self.evidence_inliers < 0:
            raise ConfigError(f'evidence_inliers must be >= 0, got {self.evidence_inliers}')
        if self.max_verifications < 1:
            raise ConfigError(f'max_verifications must be >= 1, got {self.max_verifications}')
