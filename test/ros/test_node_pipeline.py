"""The node's adapter to vpr_core: extrinsics, engine config from parameters, cameras."""
import math

import numpy as np
import pytest

from ros_harness import place_image, tiny_weights, write_place_bag
from vpr_core.errors import ConfigError
from vpr_core.mapdb.pose import rotate_vectors
from vpr_ros.parameters import localization_config
from vpr_ros.pipeline import extrinsic_pose, LocalizationPipeline


def rotation_matrix(roll, pitch, yaw):
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.mark.parametrize('rpy', [(0, 0, math.pi / 2), (0.3, -0.2, 1.1), (-1.0, 0.5, -2.5)])
def test_extrinsic_is_fixed_axis_roll_pitch_yaw(rpy):
    pose = extrinsic_pose((1.0, -2.0, 0.5, *rpy))
    assert pose.position == (1.0, -2.0, 0.5)
    vectors = np.eye(3)
    rotated = rotate_vectors(np.array(pose.orientation), vectors)
    assert np.allclose(rotated, (rotation_matrix(*rpy) @ vectors.T).T)


def test_engine_config_from_parameter_values():
    config = localization_config({'gate.min_score': 2.5, 'sequence.velocities': [1.0, 2.0],
                                  'top_k': 3, 'search.mode': 'float'})
    assert config.gate.min_score == 2.5 and config.sequence.velocities == (1.0, 2.0)
    assert config.top_k == 3 and config.search.mode == 'float'
    with pytest.raises(ConfigError, match="did you mean 'min_score'"):
        localization_config({'gate.min_scor': 1.0})


def test_each_camera_has_its_own_window(tmp_path):
    from vpr_core.extractor import Extractor
    from vpr_core.mapdb.builder import build_map
    from vpr_core.mapdb.source import BagSource
    extractor = Extractor.from_weights(tiny_weights(tmp_path / 'w.safetensors'), device='cpu')
    write_place_bag(tmp_path / 'bag', 8)
    database = build_map(BagSource(tmp_path / 'bag', '/camera/image', '/odom'), extractor,
                         progress=False)
    config = localization_config({'sequence.length': 3, 'sequence.contrast_window': 0})
    pipeline = LocalizationPipeline(extractor, database, config,
                                    [extrinsic_pose((0,) * 6), extrinsic_pose((0.5, 0, 0, 0, 0,
                                                                              math.pi))])
    for index in range(4):
        front = pipeline.process(place_image(index), 10.0 + index, camera=0)
    rear = pipeline.process(place_image(6), 20.0, camera=1)
    assert front.frames == 3 and rear.frames == 1
    assert rear.candidates[0].place_id == 6
    assert rear.pose.position[0] == pytest.approx(6.5, abs=1e-6)
    assert pipeline.status()['map_size'] == '8'
    pipeline.update({'localization.gate.min_score': 0.2, 'top_k': 2})
    assert len(pipeline.process(place_image(1), 30.0, camera=0).candidates) == 2
    pipeline.close()
