"""Work that grows with the map happens once per map, not per frame or per config change."""
from dataclasses import replace

import numpy as np
import pytest

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.localization import recognizer as recognizer_module
from vpr_core.localization import tracker as tracker_module
from vpr_core.localization.config import LocalizationConfig, SequenceConfig
from vpr_core.localization.recognizer import PlaceRecognizer
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.manifest import MapManifest
from vpr_core.mapdb.pose import Pose, quaternions_from_yaw

COUNT, DIM, SPACING = 120, 32, 1.5


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def route():
    """A map of 120 places 1.5 m apart along a bend, and noisy queries of every place."""
    rng = np.random.default_rng(5)
    places = unit(rng.standard_normal((COUNT, DIM)))
    queries = unit(places + 0.2 * rng.standard_normal((COUNT, DIM)))
    projection = rng.standard_normal((DIM, 64))
    heading = np.linspace(0.0, 1.0, COUNT)
    steps = SPACING * np.stack([np.cos(heading), np.sin(heading), np.zeros(COUNT)], axis=1)
    positions = np.cumsum(steps, axis=0)
    manifest = MapManifest(model_fingerprint='model-a', descriptor_dim=DIM, code_bits=64,
                           num_places=COUNT)
    database = MapDatabase(manifest, Descriptors(places, pack_codes(places @ projection)),
                           positions, quaternions_from_yaw(heading),
                           np.arange(COUNT, dtype=np.int64) * 10**9)
    return database, Descriptors(queries, pack_codes(queries @ projection))


@pytest.fixture
def path_passes(monkeypatch):
    """How often the map's along-track path is computed (a pass over every place)."""
    calls = []
    original = tracker_module.along_track

    def counting(positions):
        calls.append(len(positions))
        return original(positions)

    monkeypatch.setattr(tracker_module, 'along_track', counting)
    monkeypatch.setattr(recognizer_module, 'along_track', counting)
    return calls


def stream(recognizer, queries, frames):
    """(row, accepted, rounded score) per frame, with odometry 1.2x the map spacing."""
    out = []
    for i in frames:
        result = recognizer.process(queries[i:i + 1], i * 10**8,
                                    odometry=Pose((1.2 * SPACING * i, 0.0, 0.0)))
        best = result.candidates[0] if result.candidates else None
        out.append((None if best is None else best.index, result.accepted,
                    None if best is None else round(best.score, 9)))
    return out


def test_config_change_reuses_the_maps_path_and_scores_as_a_fresh_recognizer(
        route, path_passes):
    database, queries = route
    first = LocalizationConfig(sequence=SequenceConfig(length=5, contrast_window=10))
    recognizer = PlaceRecognizer(database, None, first)
    assert path_passes == [COUNT]
    stream(recognizer, queries, range(10, 20))
    second = replace(first, sequence=replace(first.sequence, length=8))
    recognizer.update_config(second)
    assert path_passes == [COUNT]               # the new tracker got the path, not the map
    updated = stream(recognizer, queries, range(30, 60))
    fresh = stream(PlaceRecognizer(database, None, second), queries, range(30, 60))
    assert updated == fresh
    assert sum(accepted for _, accepted, _ in fresh) > 10
    assert all(abs(row - i) <= 2 for (row, accepted, _), i in zip(fresh, range(30, 60))
               if accepted)


def test_tracker_alone_still_measures_the_path(route):
    database, queries = route
    config = SequenceConfig(length=4, contrast_window=10)
    own = tracker_module.SequenceTracker(database.floats, database.codes, 64, config,
                                         database.positions, SPACING)
    given = tracker_module.SequenceTracker(
        database.floats, database.codes, 64, config, database.positions, SPACING,
        along=tracker_module.along_track(database.positions))
    np.testing.assert_allclose(own.along[-1], SPACING * (COUNT - 1))
    for tracker in (own, given):
        for i in range(40, 44):
            tracker.push(queries[i:i + 1], True, i * 10**8, 1.1 * SPACING * i)
    assert own.score(np.arange(30, 50)) == given.score(np.arange(30, 50))


def test_hubness_pass_over_a_float16_map_goes_block_by_block(route, monkeypatch):
    database, queries = route
    half = MapDatabase(database.manifest.with_changes(float_dtype='float16'),
                       Descriptors(database.floats.astype(np.float16), database.codes),
                       database.positions, database.orientations, database.stamps_ns)
    config = LocalizationConfig(sequence=SequenceConfig(length=5, contrast_window=10,
                                                        hubness_k=3))
    whole = stream(PlaceRecognizer(half, None, config), queries, range(20, 50))
    tracker = PlaceRecognizer(half, None, config).tracker
    row = queries.floats[7]
    expected = np.einsum('nd,d->n', half.floats.astype(np.float32), row)
    monkeypatch.setattr(tracker_module, '_SIMILARITY_BLOCK', 7)     # 120 = 17 x 7 + 1
    np.testing.assert_array_equal(tracker._similarity_to_all(row), expected)
    assert stream(PlaceRecognizer(half, None, config), queries, range(20, 50)) == whole
    assert sum(accepted for _, accepted, _ in whole) > 10
