"""Saving a loop-closure session: the map and its local features are one atomic write, and
the feature files are the project's checked array files."""
import pytest

from vpr_core.loops import session as session_module
from vpr_core.loops.config import LoopConfig
from vpr_core.loops.detector import LoopDetector
from vpr_core.loops.features import INDEX_FILE, load_features
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.keyframe import KeyframeConfig

from loop_toys import PlaceExtractor, textured_image

CONFIG = LoopConfig(min_time_gap_s=10.0, min_travel_gap_m=5.0, min_score=0.2,
                    unverified_min_score=0.5, consistency=2, unverified_consistency=3,
                    keyframes=KeyframeConfig(enabled=False))


def _session(places, start_s=0.0):
    detector = LoopDetector(PlaceExtractor(), CONFIG)
    for i, place in enumerate(places):
        detector.process(textured_image(place, 1), start_s + i)
    return detector


def test_features_are_written_inside_the_maps_atomic_write(tmp_path, monkeypatch):
    path = tmp_path / 'map'
    old_id = _session(range(5)).save(path)
    written = []
    real = session_module.save_features

    def failing(directory, features, map_id):
        written.append(directory)
        real(directory, features, map_id)
        raise OSError('disk full while writing the features')

    monkeypatch.setattr(session_module, 'save_features', failing)
    with pytest.raises(OSError, match='disk full'):
        _session(range(8)).save(path)
    # the features went to the temporary directory, not the live map; the failed write left
    # the old map with its own features
    assert written and written[0] != path and not written[0].exists()
    kept = MapDatabase.load(path)
    assert kept.manifest.map_id == old_id and kept.size == 5
    assert all(f is not None for f in load_features(path, old_id, 5))
    assert not any(p.name.startswith('.map.tmp-') for p in tmp_path.iterdir())


def test_snapshot_is_written_later_unchanged_by_new_frames(tmp_path):
    detector = _session(range(6))
    snapshot = detector.snapshot()
    for i, place in enumerate(range(6, 9)):
        detector.process(textured_image(place, 1), 100.0 + i)
    map_id = session_module.write_session(snapshot, tmp_path / 'map')
    saved = MapDatabase.load(tmp_path / 'map')
    assert saved.size == 6 and saved.manifest.map_id == map_id
    features = load_features(tmp_path / 'map', map_id, 6)
    assert all(f is not None and len(f) > 50 for f in features)
    assert (tmp_path / 'map' / INDEX_FILE).is_file()


def test_keyframe_descriptors_are_held_once_and_saved_as_searched(tmp_path):
    """The search store owns them; the session map is built from its rows, not a copy kept
    by the recorder."""
    import numpy as np
    from vpr_core.errors import MapError
    detector = _session(range(7))
    assert all(row[0] is None for row in detector._recorder._rows)
    saved = MapDatabase.load(tmp_path / 'map') if detector.save(tmp_path / 'map') else None
    store = detector.store.rows(slice(0, None))
    assert np.array_equal(saved.codes, store.codes)
    assert np.allclose(saved.floats.astype(np.float32), store.floats, atol=1e-3)
    with pytest.raises(MapError, match='keeps no descriptors'):
        detector._recorder.to_map()
    with pytest.raises(MapError, match='6 descriptor rows for 7 keyframes'):
        detector._recorder.to_map(detector.store.rows(slice(1, None)))
