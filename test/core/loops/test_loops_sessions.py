"""Multi-session loop closure on real images: the first pass of rtabmap_loop saved with its
local features, the second pass closing verified loops against it."""
import json

import numpy as np
import pytest

from vpr_core.extractor import Extractor
from vpr_core.geometry.config import VerifyConfig
from vpr_core.geometry.features import extract_features
from vpr_core.image import load_image_file
from vpr_core.loops.config import LoopConfig
from vpr_core.loops.detector import LoopDetector
from vpr_core.loops.features import load_features, pack_features, unpack_features
from vpr_core.loops.truth import read_truth
from vpr_core.mapdb.database import MapDatabase


@pytest.fixture(scope='module')
def frames(rtabmap):
    return [load_image_file(rtabmap / 'samples' / f'{n}.jpg') for n in range(1, 85)]


@pytest.fixture(scope='module')
def extractor():
    return Extractor.from_weights(None, device='cpu')


def test_second_session_closes_verified_loops_against_the_first(frames, extractor, rtabmap,
                                                                tmp_path):
    first = LoopDetector(extractor, LoopConfig())
    for n in range(40):
        first.process(frames[n], float(n))
    map_id = first.save(tmp_path / 'session1')
    previous = MapDatabase.load(tmp_path / 'session1', expected_fingerprint=extractor.fingerprint)
    stored = load_features(previous.path, map_id, previous.size)
    assert all(f is not None for f in stored) and np.median([len(f) for f in stored]) > 100
    second = LoopDetector(extractor, LoopConfig(), previous=previous)
    loops = []
    for n in range(40, 84):
        # stamps of a later day: only the previous session lies outside the time gap
        result = second.process(frames[n], 86400.0 + n)
        if result.loop is not None:
            loops.append(result.loop)
    truth = read_truth(rtabmap / 'samples_GT.bmp', 84)
    against_first = [loop for loop in loops if loop.match_index < 40]
    correct = [loop for loop in against_first if truth[loop.query_index, loop.match_index]]
    assert len(correct) >= 20
    assert all(loop.match_session == map_id and loop.verified for loop in against_first)
    # the one false loop of the single-session run (67 -> 19) is a loop across sessions here
    assert len(correct) >= 0.9 * len(loops)
    assert all(loop.verification.pose is not None for loop in against_first)


def test_features_round_trip_and_stale_features_are_dropped(frames, extractor, tmp_path,
                                                            caplog):
    config = VerifyConfig()
    features = [extract_features(frames[0], config), None, extract_features(frames[1], config)]
    back = unpack_features(pack_features(features))
    assert back[1] is None
    for mine, theirs in ((features[0], back[0]), (features[2], back[2])):
        np.testing.assert_array_equal(mine.keypoints, theirs.keypoints)
        np.testing.assert_array_equal(mine.descriptors, theirs.descriptors)
        assert (mine.kind, mine.width, mine.height) == (theirs.kind, theirs.width,
                                                        theirs.height)
    detector = LoopDetector(extractor, LoopConfig())
    for n in range(3):
        detector.process(frames[n], float(n))
    map_id = detector.save(tmp_path / 'map')
    assert load_features(tmp_path / 'map', 'another-map', 3) == [None] * 3
    assert 'stale' in caplog.text
    index = tmp_path / 'map' / 'local_features.json'
    data = json.loads(index.read_text())
    damaged = tmp_path / 'map' / 'local_features_keypoints.npy'
    damaged.write_bytes(damaged.read_bytes()[:-8] + b'\0' * 8)
    assert load_features(tmp_path / 'map', map_id, 3) == [None] * 3
    assert 'corrupt' in caplog.text and data['map_id'] == map_id
