"""Saving a loop detector's database: the combined map of the sessions and its features.

:meth:`LoopDetector.snapshot <vpr_core.loops.detector.LoopDetector.snapshot>` copies what is
to be saved (under the caller's lock); :func:`write_session` writes it outside that lock, the
map and its local feature files in one atomic directory write.
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
from pathlib import Path

import numpy as np

from vpr_core.geometry.features import LocalFeatures
from vpr_core.loops.features import save_features
from vpr_core.mapdb.database import MapDatabase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionSnapshot:
    """A detector's database as saved: the map (previous sessions first), the local
    features of every row (None: none) and how many rows are this session's."""

    database: MapDatabase
    features: tuple[LocalFeatures | None, ...]
    session_keyframes: int


def write_session(snapshot: SessionSnapshot, path: str | Path) -> str:
    """Write ``snapshot`` to ``path``: the map and its feature files in the same temporary
    directory, swapped in at once (a crash leaves the old map with its features or the new
    one with its own); returns the map id."""
    database = snapshot.database
    database.save(path, tool='loops', extra_files=lambda tmp, manifest: save_features(
        tmp, snapshot.features, manifest.map_id))
    logger.info('saved %d keyframes (%d of this session) with local features to %s',
                database.size, snapshot.session_keyframes, path)
    return database.manifest.map_id


def synthetic_poses(database: MapDatabase) -> MapDatabase:
    """``database`` with made-up poses (row i at (i, 0, 0), identity orientation), flagged
    ``synthetic_poses``."""
    count = database.size
    positions = np.zeros((count, 3))
    positions[:, 0] = np.arange(count, dtype=np.float64)
    orientations = np.tile([0.0, 0.0, 0.0, 1.0], (count, 1))
    manifest = database.manifest.with_changes(synthetic_poses=True, orientation_source='none')
    return MapDatabase(manifest, database.descriptors, positions, orientations,
                       database.stamps_ns, database.place_ids, database.thumbnails,
                       database.names, database.path)


def combine_sessions(previous: MapDatabase | None, session: MapDatabase) -> MapDatabase:
    """``previous`` sessions and this ``session`` as one map. When their poses are of
    different kinds (measured / synthetic) or frames, every row gets synthetic poses, with a
    warning: the loop-closure database needs descriptors, stamps and features, not metric
    poses, and a session must never be lost at save time for this reason."""
    if previous is None:
        return session
    if not session.size:
        return previous
    if previous.manifest.synthetic_poses != session.manifest.synthetic_poses or \
            previous.manifest.frame_id != session.manifest.frame_id:
        logger.warning(
            "previous map %s has %s poses in frame '%s', this session %s poses in "
            "frame '%s': the combined map is saved with synthetic poses for all %d "
            'keyframes (loop closure needs no metric poses; the measured ones are '
            'dropped)', previous.path,
            'synthetic' if previous.manifest.synthetic_poses else 'measured',
            previous.manifest.frame_id,
            'synthetic' if session.manifest.synthetic_poses else 'measured',
            session.manifest.frame_id, previous.size + session.size)
        previous, session = synthetic_poses(previous), synthetic_poses(session)
        session = MapDatabase(session.manifest.with_changes(
            frame_id=previous.manifest.frame_id), session.descriptors, session.positions,
            session.orientations, session.stamps_ns, session.place_ids,
            names=session.names)
    return previous.append(session)
