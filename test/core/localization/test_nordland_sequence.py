"""Nordland proof: with the same descriptors, sequence matching raises R@1 over single frames.

Descriptors: patch-normalised 64x32 grey pixels (no model). Protocol of ../shared/data: the
test part is index 1800..3575, winter queries against the summer database, correct iff
|i - j| <= 1. The sequence settings are chosen on the train part (17..1799) by this test
itself, never on the test part. The measured numbers are logged (pytest -s / -rA shows them).
"""
import csv
import logging

import numpy as np
import pytest

from vpr_core.descriptors import Descriptors
from vpr_core.evaluation.baseline import describe_pixels, pixel_distances
from vpr_core.image import load_image_file
from vpr_core.localization.config import GateConfig, LocalizationConfig, SequenceConfig
from vpr_core.localization.recognizer import PlaceRecognizer
from vpr_core.localization.sequence import sequence_match
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.index import SearchConfig
from vpr_core.mapdb.manifest import MapManifest
from vpr_core.mapdb.pixel import PixelDescriptors
from vpr_core.mapdb.source import synthetic_table

TRAIN, TEST = (17, 1800), (1800, 3576)
LENGTH = 10
GRID = [(window, velocities) for window in (10, 20)
        for velocities in ((1.0,), (0.8, 0.9, 1.0, 1.1, 1.25))]
logger = logging.getLogger(__name__)


@pytest.fixture(scope='module')
def pixels(nordland):
    with open(nordland / 'pairs.csv', newline='') as handle:
        rows = list(csv.DictReader(handle))
    summer = describe_pixels(load_image_file(nordland / r['summer_file']) for r in rows)
    winter = describe_pixels(load_image_file(nordland / r['winter_file']) for r in rows)
    return summer, winter


def recall_at_1(best: np.ndarray) -> float:
    return float(np.mean(np.abs(best - np.arange(len(best))) <= 1))


def part(array, bounds):
    return array[bounds[0]:bounds[1]]


def test_sequence_matching_beats_single_frame_on_the_test_part(pixels):
    summer, winter = pixels
    train = pixel_distances(part(winter, TRAIN), part(summer, TRAIN))
    chosen = max(GRID, key=lambda g: recall_at_1(sequence_match(
        train, LENGTH, contrast_window=g[0], velocities=g[1])[0]))
    test = pixel_distances(part(winter, TEST), part(summer, TEST))
    single = recall_at_1(np.argmin(test, axis=1))
    sequence = recall_at_1(sequence_match(test, LENGTH, contrast_window=chosen[0],
                                          velocities=chosen[1])[0])
    plain = recall_at_1(sequence_match(test, LENGTH)[0])
    logger.warning('Nordland test R@1 (pixels, MAD): single %.3f, sequence %d frames %.3f '
                   '(window %d, velocities %s chosen on train), without contrast %.3f',
                   single, LENGTH, sequence, chosen[0], chosen[1], plain)
    assert abs(single - 0.048) < 0.005                       # the reference figure
    assert plain > single
    assert sequence > max(plain, 0.081) + 0.2                # well above the reference 0.081


def test_stream_recognizer_beats_single_frame_on_the_test_part(pixels):
    summer, winter = pixels
    source = PixelDescriptors()

    def describe(floats):
        floats = floats / np.linalg.norm(floats, axis=1, keepdims=True)
        return Descriptors(floats.astype(np.float32), source.codes_of(floats))

    places, queries = describe(part(summer, TEST)), describe(part(winter, TEST))
    table = synthetic_table([str(i) for i in range(len(places))])
    manifest = MapManifest(model_fingerprint=source.fingerprint, descriptor_dim=2048,
                           code_bits=256, num_places=len(places), synthetic_poses=True,
                           orientation_source='none')
    database = MapDatabase(manifest, places, table.positions, table.orientations,
                           table.stamps_ns)
    config = LocalizationConfig(search=SearchConfig(mode='rerank', rerank_k=100),
                                sequence=SequenceConfig(length=LENGTH, velocities=(1.0,)),
                                gate=GateConfig(min_score=1.0, min_margin=0.1))
    count = 400                                              # a fifth of the route: fast
    results = PlaceRecognizer(database, source, config).run(queries[:count])
    best = np.array([r.match.index for r in results])
    accepted = np.array([r.accepted for r in results])
    correct = np.abs(best - np.arange(count)) <= 1
    single = database.search_hits(queries[:count], 1, SearchConfig(mode='rerank')).indices[:, 0]
    logger.warning('Nordland test, first %d queries, stream recognizer (pixels, rerank): '
                   'single R@1 %.3f, sequence R@1 %.3f, accepted %.3f with precision %.3f',
                   count, recall_at_1(single), correct.mean(), accepted.mean(),
                   correct[accepted].mean())
    assert correct.mean() > recall_at_1(single) + 0.3
    assert correct[accepted].mean() > 0.85 and accepted.mean() > 0.4
    for result in results:
        covariance = np.asarray(result.covariance)
        assert np.all(covariance >= 0) and np.all(covariance < 1e9)
        assert np.all(np.diag(covariance.reshape(6, 6)) > 0)
