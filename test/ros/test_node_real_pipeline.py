"""The node with the real vpr_core engine: a tiny model, a map built from a bag, teach mode."""
import time

from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
import numpy as np
import pytest
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from ros_harness import (call, place_image, tiny_weights, wait_for, write_place_bag)
from vpr_core.image import encode_raw
from vpr_core.mapdb.database import MapDatabase
from vpr_ros.conversions import cloud_to_array, stamp_from_seconds, stamp_seconds

pytestmark = pytest.mark.ros
PLACES = 12
ENGINE = {'localization.sequence.length': 3, 'localization.sequence.contrast_window': 0,
          'localization.gate.min_score': 0.5, 'localization.gate.min_margin': 0.0,
          'localization.gate.min_frames': 2, 'device': 'cpu'}


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    from vpr_core.extractor import Extractor
    from vpr_core.mapdb.builder import build_map
    from vpr_core.mapdb.source import BagSource
    root = tmp_path_factory.mktemp('assets')
    weights = tiny_weights(root / 'tiny.safetensors')
    write_place_bag(root / 'bag', PLACES)
    build_map(BagSource(root / 'bag', '/camera/image', '/odom'),
              Extractor.from_weights(weights, device='cpu'), out=root / 'map', progress=False)
    return weights, root / 'map'


def image_message(rgb, stamp_s):
    step, data = encode_raw(rgb, 'rgb8')
    message = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=step,
                    data=data)
    message.header.stamp = stamp_from_seconds(stamp_s)
    return message


def test_localizes_a_replayed_route(ros, assets):
    weights, map_dir = assets
    node = ros.vpr_node({'weights': weights, 'map_dir': str(map_dir), **ENGINE},
                        factory=None)
    assert node.state == 'active', node.error
    probe = ros.probe()
    clouds = probe.listen(PointCloud2, '/vpr_node/candidates_cloud')
    priors = probe.listen(PoseWithCovarianceStamped, '/vpr_node/pose_prior')
    loops = probe.listen(Float64MultiArray, '/vpr_node/loop_closure')
    candidates = probe.listen(PoseArray, '/vpr_node/candidates')
    publisher = probe.publisher(Image, '/image')
    assert wait_for(lambda: publisher.get_subscription_count() == 1)
    for index in range(PLACES):
        before = len(clouds)
        publisher.publish(image_message(place_image(index, noise=8.0), 500.0 + index))
        assert wait_for(lambda: len(clouds) > before), f'no output for frame {index}'
    best = [int(cloud_to_array(m)['place_id'][0]) for _, m in clouds]
    stamps = [stamp_seconds(m.header.stamp) for _, m in clouds]
    assert stamps == [500.0 + i for i in range(PLACES)]
    assert np.mean(np.array(best) == np.arange(PLACES)) >= 0.9
    assert len(candidates) == PLACES and len(priors) >= PLACES - 3
    for _, prior in priors:
        index = round(stamp_seconds(prior.header.stamp) - 500.0)
        assert prior.pose.pose.position.x == pytest.approx(index, abs=1.01)
        covariance = np.array(prior.pose.covariance).reshape(6, 6)
        assert np.all(np.diag(covariance) > 0) and np.all(covariance >= 0)
        assert np.all(covariance <= 1e9)
    t_query, t_match = loops[-1][1].data
    assert t_match == pytest.approx(100.0 + (t_query - 500.0), abs=1.01)
    info = node._pipeline.status()
    assert info['map_size'] == str(PLACES) and info['device'] == 'cpu'


def test_a_map_of_another_model_is_refused(ros, assets, tmp_path):
    _, map_dir = assets
    other = tiny_weights(tmp_path / 'other.safetensors')
    import torch
    from vpr_core.model.checkpoint import load_model, save_model
    model = load_model(other)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_model(model, other)
    node = ros.vpr_node({'weights': other, 'map_dir': str(map_dir), 'device': 'cpu'},
                        factory=None)
    assert node.state == 'unconfigured'
    assert 'was built by model' in node.error and 'rebuild the map' in node.error


def test_missing_weights_and_map_fail_clearly(ros, assets, tmp_path):
    weights, _ = assets
    node = ros.vpr_node({'weights': str(tmp_path / 'none.safetensors')}, factory=None)
    assert 'model file not found' in node.error
    node = ros.vpr_node({'weights': weights, 'map_dir': str(tmp_path / 'nomap'),
                         'device': 'cpu'}, factory=None, node_name='vpr_other')
    assert node.state == 'unconfigured' and 'nomap' in node.error


def test_teach_mode_records_and_saves_atomically(ros, assets, tmp_path):
    weights, _ = assets
    map_dir = tmp_path / 'taught'
    node = ros.vpr_node({'weights': weights, 'map_dir': str(map_dir), 'mode': 'teach',
                         'pose_topic': '/odom', 'device': 'cpu',
                         'teach.min_distance_m': 2.0}, factory=None)
    assert node.state == 'active', node.error
    probe = ros.probe()
    odometry = probe.publisher(Odometry, '/odom')
    images = probe.publisher(Image, '/image')
    assert wait_for(lambda: images.get_subscription_count() == 1 and
                    odometry.get_subscription_count() == 1)

    def drive(indices):
        for index in indices:
            message = Odometry()
            message.header.stamp = stamp_from_seconds(1000.0 + index)
            message.header.frame_id = 'map'
            message.pose.pose.position.x = float(index)
            message.pose.pose.orientation.w = 1.0
            odometry.publish(message)
            assert wait_for(lambda: len(node._poses) > index)
            processed = node.stats.processed
            for _ in range(20):
                images.publish(image_message(place_image(index), 1000.0 + index))
                if wait_for(lambda: node.stats.processed > processed, 0.2):
                    break
    drive(range(10))
    response = call(probe, Trigger, '/vpr_node/save_map', Trigger.Request())
    assert response.success, response.message
    saved = MapDatabase.load(map_dir)
    assert saved.size == 5 and list(saved.positions[:, 0]) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert saved.fingerprint == node._pipeline._extractor.fingerprint
    drive(range(10, 14))
    node.finish()
    assert MapDatabase.load(map_dir).size == 7


def test_the_node_process_saves_its_teach_map_on_ctrl_c(ros, assets, tmp_path):
    from vpr_ros.node_process import NodeProcess
    weights, _ = assets
    probe = ros.probe()
    odometry = probe.publisher(Odometry, '/odom')
    images = probe.publisher(Image, '/image')
    reliable = {'subscription': {'reliability': 'reliable', 'depth': 10}}
    params = {'weights': weights, 'map_dir': str(tmp_path / 'taught'), 'mode': 'teach',
              'pose_topic': '/odom', 'device': 'cpu', 'teach.min_distance_m': 1.0,
              'qos_overrides': {'/image': reliable, '/odom': reliable}}
    node = NodeProcess(probe, params, log_path=tmp_path / 'node.log')
    node.start(timeout_s=120.0)
    try:
        assert wait_for(lambda: images.get_subscription_count() == 1 and
                        odometry.get_subscription_count() == 1)
        for index in range(4):
            message = Odometry()
            message.header.stamp = stamp_from_seconds(50.0 + index)
            message.pose.pose.position.x = float(index)
            message.pose.pose.orientation.w = 1.0
            odometry.publish(message)
            time.sleep(0.3)
            images.publish(image_message(place_image(index), 50.0 + index))
            time.sleep(0.5)
    finally:
        code = node.stop()
    log = (tmp_path / 'node.log').read_text()
    assert code == 0, log
    assert 'saved map' in log
    assert MapDatabase.load(tmp_path / 'taught').size == 4
