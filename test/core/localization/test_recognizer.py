"""PlaceRecognizer: acceptance and each gate, covariance validity, extrinsic, calibration."""
from dataclasses import replace

import numpy as np
import pytest

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.errors import ConfigError, IncompatibleMapError
from vpr_core.localization.calibration import ScoreCalibration
from vpr_core.localization.config import (GateConfig, LocalizationConfig, PriorConfig,
                                          SequenceConfig)
from vpr_core.localization.gate import REASONS
from vpr_core.localization.recognizer import PlaceRecognizer
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.manifest import MapManifest
from vpr_core.mapdb.pixel import PixelDescriptors
from vpr_core.mapdb.pose import Pose, quaternions_from_yaw, yaw_from_quaternions

COUNT, DIM = 80, 32
SPACING = 2.0


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def describe(floats, projection):
    return Descriptors(floats, pack_codes(floats @ projection))


@pytest.fixture
def route():
    """A map of 80 places 2 m apart heading +x, and noisy queries of every place."""
    rng = np.random.default_rng(0)
    places = unit(rng.standard_normal((COUNT, DIM)))
    queries = unit(places + 0.2 * rng.standard_normal((COUNT, DIM)))
    projection = rng.standard_normal((DIM, 64))
    positions = np.zeros((COUNT, 3))
    positions[:, 0] = SPACING * np.arange(COUNT)
    manifest = MapManifest(model_fingerprint='model-a', descriptor_dim=DIM, code_bits=64,
                           num_places=COUNT)
    database = MapDatabase(manifest, describe(places, projection), positions,
                           quaternions_from_yaw(np.zeros(COUNT)),
                           np.arange(COUNT, dtype=np.int64) * 10**9)
    return database, describe(queries, projection)


def config(**gate):
    return LocalizationConfig(sequence=SequenceConfig(length=5, velocities=(1.0,),
                                                      contrast_window=10),
                              gate=GateConfig(**gate))


def check_covariance(result):
    covariance = np.asarray(result.covariance).reshape(6, 6)
    assert covariance.shape == (6, 6)
    assert np.all(covariance >= 0) and np.all(covariance <= 1e6)
    assert np.all(np.diag(covariance) > 0)
    assert np.count_nonzero(covariance - np.diag(np.diag(covariance))) == 0
    q = np.asarray(result.pose.orientation)
    assert abs(np.linalg.norm(q) - 1.0) < 1e-9


def test_a_consistent_traversal_is_accepted_after_warm_up(route):
    database, queries = route
    recognizer = PlaceRecognizer(database, None, config())
    results = [recognizer.process(queries[i:i + 1], i * 10**9) for i in range(10, 40)]
    assert [r.rejection_reason for r in results[:2]] == ['warming up', 'warming up']
    later = results[3:]
    assert all(r.accepted and r.reason == '' for r in later)
    assert all(r.match.index == i + 13 for i, r in enumerate(later))
    for result in later:
        assert 0.5 < result.confidence <= 1.0 and result.margin > 0.1
        assert len(result.candidates) == 10 and result.candidates[0].rank == 0
        assert np.isclose(result.pose.position[0], SPACING * result.match.index)
        check_covariance(result)
        covariance = np.asarray(result.covariance).reshape(6, 6)
        assert covariance[0, 0] >= (0.5 * SPACING) ** 2 - 1e-9      # floor from spacing
        assert covariance[2, 2] == covariance[3, 3] == covariance[4, 4] == 1e4  # planar map
    assert results[-1].stamp == 39.0


def test_a_jump_is_rejected_until_it_is_consistent(route):
    database, queries = route
    recognizer = PlaceRecognizer(database, None, config(min_score=-10, min_margin=-10))
    for i in range(10, 25):
        last = recognizer.process(queries[i:i + 1], i)
    assert last.accepted
    # a kidnap: the stamps go on at the frame rate (index i is shown at stamp i - 35)
    jumped = [recognizer.process(queries[i:i + 1], i - 35) for i in range(60, 70)]
    assert not any(r.events for r in jumped)
    assert jumped[0].rejection_reason == 'current frame disagrees'
    assert not any(r.accepted and r.match.index < 60 for r in jumped)
    assert 'temporal disagreement' in [r.rejection_reason for r in jumped]
    assert jumped[-1].accepted and jumped[-1].match.index == 69


def test_each_threshold_gates(route):
    database, queries = route

    def final(**gate):
        recognizer = PlaceRecognizer(database, None, config(**gate))
        return [recognizer.process(queries[i:i + 1], i) for i in range(20, 30)][-1]

    assert final(min_score=50.0).rejection_reason == 'low score'
    assert final(min_margin=50.0).rejection_reason == 'low margin'
    assert final(min_agreement=50).rejection_reason == 'temporal disagreement'
    assert final(min_frames=50).rejection_reason == 'warming up'
    assert final().accepted
    assert {'low score', 'low margin', 'warming up'} <= set(REASONS)


def test_odometry_gate_and_window_steps(route):
    database, queries = route
    recognizer = PlaceRecognizer(database, None, config(odometry_tolerance_m=1.0))
    for i in range(20, 30):           # odometry agrees: 2 m per frame
        result = recognizer.process(queries[i:i + 1], i, odometry=Pose((2.0 * i, 5.0, 0.0)))
    assert result.accepted
    result = recognizer.process(queries[30:31], 30, odometry=Pose((2.0 * 29 + 20.0, 5, 0)))
    assert result.rejection_reason == 'odometry disagreement'
    # a stopped robot replaces the newest window step instead of adding steps
    steps = len(recognizer.tracker.window)
    for _ in range(3):
        recognizer.process(queries[31:32], 31, odometry=Pose((2.0 * 29 + 20.0, 5, 0)))
    assert len(recognizer.tracker.window) == steps


def test_ambiguous_places_are_rejected_not_smeared_into_the_covariance(route):
    """Two equal places 70 m apart: the gate rejects the match ('low margin'); the prior
    describes the matched place only (a Gaussian over both would be consistent and useless),
    so its sigma stays at the scale of the keyframe spacing, not of the 70 m between them."""
    database, queries = route
    floats, codes = database.floats.copy(), database.codes.copy()
    floats[45:75], codes[45:75] = floats[10:40], codes[10:40]   # the route repeats 70 m on
    twin = MapDatabase(database.manifest, Descriptors(floats, codes),
                       database.positions, database.orientations, database.stamps_ns)
    recognizer = PlaceRecognizer(twin, None, config())
    result = [recognizer.process(queries[i:i + 1], i) for i in range(20, 30)][-1]
    assert result.rejection_reason == 'low margin' and abs(result.margin) < 1e-6
    assert not result.accepted
    covariance = np.asarray(result.covariance).reshape(6, 6)
    spacing = twin.keyframe_spacing_m
    assert 0.25 * spacing ** 2 <= covariance[0, 0] < (2.0 * spacing) ** 2
    check_covariance(result)


def test_camera_extrinsic_is_removed_from_the_prior(route):
    database, queries = route
    camera_in_base = Pose((1.0, 0.5, 1.2), tuple(quaternions_from_yaw(np.array([0.3]))[0]))
    recognizer = PlaceRecognizer(database, None, config())
    for i in range(20, 26):
        result = recognizer.process(queries[i:i + 1], i, camera_in_base=camera_in_base)
    place = database.positions[result.match.index]
    yaw = -0.3
    expected = place + [-(np.cos(yaw) * 1.0 - np.sin(yaw) * 0.5),
                        -(np.sin(yaw) * 1.0 + np.cos(yaw) * 0.5), -1.2]
    assert np.allclose(result.pose.position, expected)
    assert np.isclose(yaw_from_quaternions(np.array([result.pose.orientation]))[0], yaw)
    check_covariance(result)


def test_calibration_fit_save_load_and_scaling(tmp_path, route):
    scores = np.linspace(0.0, 4.0, 200)
    predicted = np.ones(200)
    errors = np.where(scores < 2.0, 9.0, 1.0) * np.random.default_rng(0).uniform(0.5, 1.5, 200)
    calibration = ScoreCalibration.fit(scores, predicted, errors, bins=4)
    assert calibration.factor(0.5) > 5.0 and calibration.factor(3.5) < 2.0
    assert list(calibration.factors) == sorted(calibration.factors, reverse=True)
    calibration.save(tmp_path / 'calibration.json')
    assert ScoreCalibration.load(tmp_path / 'calibration.json') == calibration
    with pytest.raises(ConfigError, match='not a score calibration'):
        (tmp_path / 'bad.json').write_text('{"format": "x"}')
        ScoreCalibration.load(tmp_path / 'bad.json')
    database, queries = route
    inflated = LocalizationConfig(sequence=config().sequence, prior=PriorConfig(
        calibration=str(tmp_path / 'calibration.json')))
    plain, scaled = PlaceRecognizer(database, None, config()), \
        PlaceRecognizer(database, None, inflated)
    for i in range(20, 26):
        a = plain.process(queries[i:i + 1], i)
        b = scaled.process(queries[i:i + 1], i)
    ratio = b.covariance[0] / a.covariance[0]
    assert np.isclose(ratio, calibration.factor(a.match.score))


def test_images_need_the_maps_model_and_an_empty_map_says_so(tmp_path, route):
    database, queries = route
    with pytest.raises(ConfigError, match='no extractor'):
        PlaceRecognizer(database).process(np.zeros((32, 64, 3), np.uint8), 0)
    with pytest.raises(IncompatibleMapError, match='model-a.*pixels'):
        PlaceRecognizer(database, PixelDescriptors())
    empty = MapDatabase(database.manifest, database.descriptors[:0], np.zeros((0, 3)),
                        np.zeros((0, 4)), np.zeros(0, np.int64))
    result = PlaceRecognizer(empty).process(queries[:1], 5)
    assert result.rejection_reason == 'empty map' and result.candidates == ()
    pixels = PixelDescriptors(size=(8, 16), patch=8, code_bits=32)
    image = np.random.default_rng(0).integers(0, 255, (24, 48, 3), dtype=np.uint8)
    map_descriptors = pixels.extract([image, image[::-1]])
    manifest = MapManifest(model_fingerprint=pixels.fingerprint, descriptor_dim=128,
                           code_bits=32, num_places=2)
    small = MapDatabase(manifest, map_descriptors, np.zeros((2, 3)),
                        quaternions_from_yaw(np.zeros(2)), np.zeros(2, np.int64))
    result = PlaceRecognizer(small, pixels).process(image, 1.5)
    assert result.match.index == 0 and result.stamp_ns == 1_500_000_000


def test_hubness_reduction_reaches_the_tracker_and_survives_a_reset(route):
    database, queries = route
    plain = config()
    hubness = LocalizationConfig(sequence=replace(plain.sequence, hubness_k=3), gate=plain.gate)
    recognizer = PlaceRecognizer(database, None, plain)
    assert recognizer.tracker.hubness is None
    recognizer.update_config(hubness)
    results = [recognizer.process(queries[i:i + 1], i * 10**9) for i in range(10, 40)]
    assert recognizer.tracker.hubness.seen == 30
    assert all(r.match.index == i + 10 for i, r in enumerate(results))
    reference = PlaceRecognizer(database, None, plain)
    scores = [reference.process(queries[i:i + 1], i * 10**9).candidates[0].score
              for i in range(10, 40)]
    assert not np.allclose([r.candidates[0].score for r in results], scores)
    recognizer.reset()
    assert recognizer.tracker.hubness.seen == 30
