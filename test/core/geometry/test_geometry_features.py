"""Local features: extraction on real frames, stepping aside, storage round-trip."""
import numpy as np
import pytest

from vpr_core.errors import ConfigError, MapError, UnsupportedImageError
from vpr_core.geometry.config import VerifyConfig
from vpr_core.geometry.features import LocalFeatures, extract_features


def test_orb_keypoints_lie_in_the_original_image(rtabmap_frame):
    image = rtabmap_frame(10)
    features = extract_features(image, VerifyConfig(max_features=500))
    assert features.kind == 'orb' and (features.width, features.height) == (512, 384)
    assert 300 <= len(features) <= 500
    assert features.descriptors.dtype == np.uint8 and features.descriptors.shape[1] == 32
    assert features.keypoints.min() >= 0
    assert np.all(features.keypoints.max(axis=0) <= [511, 383])


def test_sift_descriptors_are_float(rtabmap_frame):
    features = extract_features(rtabmap_frame(10), VerifyConfig(features='sift',
                                                                max_features=300))
    assert features.kind == 'sift' and features.descriptors.dtype == np.float32
    assert features.descriptors.shape == (len(features), 128) and len(features) >= 50


def test_thumbnails_and_switched_off_verification_give_none(rtabmap_frame):
    thumbnail = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    assert extract_features(thumbnail, VerifyConfig()) is None
    assert extract_features(rtabmap_frame(1), VerifyConfig(features='none')) is None


def test_blank_image_gives_no_keypoints():
    features = extract_features(np.full((240, 320, 3), 128, np.uint8), VerifyConfig())
    assert features is not None and len(features) == 0
    assert features.descriptors.shape == (0, 32)


def test_arrays_round_trip_through_npz(rtabmap_frame, tmp_path):
    features = extract_features(rtabmap_frame(3), VerifyConfig())
    np.savez(tmp_path / 'f.npz', **features.to_arrays())
    with np.load(tmp_path / 'f.npz', allow_pickle=False) as stored:
        loaded = LocalFeatures.from_arrays(stored)
    assert np.array_equal(loaded.keypoints, features.keypoints)
    assert np.array_equal(loaded.descriptors, features.descriptors)
    assert (loaded.kind, loaded.width, loaded.height) == ('orb', 512, 384)


def test_malformed_stored_features_raise_map_error(rtabmap_frame):
    arrays = extract_features(rtabmap_frame(3), VerifyConfig()).to_arrays()
    arrays['descriptors'] = arrays['descriptors'][:, :16]
    with pytest.raises(MapError, match='descriptors'):
        LocalFeatures.from_arrays(arrays)
    with pytest.raises(MapError):
        LocalFeatures.from_arrays({'keypoints': arrays['keypoints']})


def test_bad_images_and_configs_are_refused():
    with pytest.raises(UnsupportedImageError):
        extract_features(np.zeros((240, 320, 3), np.float32), VerifyConfig())
    with pytest.raises(ConfigError, match='features'):
        VerifyConfig(features='akaze')
    with pytest.raises(ConfigError, match='min_inliers'):
        VerifyConfig(min_inliers=3)
