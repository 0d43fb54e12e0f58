"""Teach mode with the real node and engine: it extends a map made by ``vpr build-map``,
``vpr build-map --append`` extends what it saved, and a map in another frame fails configure."""
import shutil

from nav_msgs.msg import Odometry
import pytest
from sensor_msgs.msg import Image

from ros_harness import place_image, tiny_weights, wait_for, write_place_bag
from vpr_core.image import encode_raw
from vpr_core.mapdb.database import MapDatabase
from vpr_ros.conversions import stamp_from_seconds

pytestmark = pytest.mark.ros
PLACES = 6


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """(weights, bag, map made by ``vpr build-map --bag ... --pose-topic /odom``)."""
    from vpr_core.cli import main
    root = tmp_path_factory.mktemp('teach_maps')
    weights = tiny_weights(root / 'tiny.safetensors')
    write_place_bag(root / 'bag', PLACES)
    assert main(['build-map', '--bag', str(root / 'bag'), '--image-topic', '/camera/image',
                 '--pose-topic', '/odom', '--out', str(root / 'map'), '--weights', weights,
                 '--device', 'cpu', '--no-progress']) == 0
    return weights, root / 'bag', root / 'map'


def drive(ros, node, xs, start_s):
    """Odometry then an image at each x (1 s apart), each image processed before the next."""
    probe = ros.probe()
    odometry = probe.publisher(Odometry, '/odom')
    images = probe.publisher(Image, '/image')
    assert wait_for(lambda: images.get_subscription_count() == 1 and
                    odometry.get_subscription_count() == 1)
    for k, x in enumerate(xs):
        message = Odometry()
        message.header.stamp = stamp_from_seconds(start_s + k)
        message.header.frame_id = 'map'
        message.pose.pose.position.x = float(x)
        message.pose.pose.orientation.w = 1.0
        odometry.publish(message)
        assert wait_for(lambda: len(node._poses) > k)
        processed = node.stats.processed
        step, data = encode_raw(place_image(50 + k), 'rgb8')
        frame = Image(height=48, width=64, encoding='rgb8', step=step, data=data)
        frame.header.stamp = stamp_from_seconds(start_s + k)
        for _ in range(20):
            images.publish(frame)
            if wait_for(lambda: node.stats.processed > processed, 0.2):
                break


def test_teach_extends_a_built_map_and_build_map_appends_to_the_result(ros, built, tmp_path,
                                                                       capsys):
    from vpr_core.cli import main
    weights, bag, source_map = built
    map_dir = tmp_path / 'map'
    shutil.copytree(source_map, map_dir)
    node = ros.vpr_node({'weights': weights, 'map_dir': str(map_dir), 'mode': 'teach',
                         'pose_topic': '/odom', 'device': 'cpu', 'teach.min_distance_m': 2.0},
                        factory=None)
    assert node.state == 'active', node.error
    assert node._pipeline.status()['map_frame_id'] == 'map'
    drive(ros, node, [100.0 + k for k in range(6)], 2000.0)
    node.finish()                                      # saves on the way out
    taught = MapDatabase.load(map_dir)
    assert taught.size == PLACES + 3
    assert list(taught.positions[PLACES:, 0]) == [100.0, 102.0, 104.0]
    assert list(taught.names[:2]) == ['/camera/image#0', '/camera/image#1']
    assert list(taught.names[PLACES:]) == [f'camera0@{(2000 + k) * 10**9}' for k in (0, 2, 4)]
    assert taught.manifest.source['appended'][-1]['kind'] == 'teach'
    capsys.readouterr()
    assert main(['build-map', '--bag', str(bag), '--image-topic', '/camera/image',
                 '--pose-topic', '/odom', '--out', str(map_dir), '--weights', weights,
                 '--device', 'cpu', '--no-progress', '--append']) == 0
    assert f'{2 * PLACES + 3} places (+{PLACES} appended)' in capsys.readouterr().out
    assert MapDatabase.load(map_dir).size == 2 * PLACES + 3


def test_a_teach_map_in_another_frame_fails_configure(ros, built, tmp_path):
    weights, _, source_map = built
    map_dir = tmp_path / 'map'
    shutil.copytree(source_map, map_dir)
    map_id = MapDatabase.load(map_dir).manifest.map_id
    node = ros.vpr_node({'weights': weights, 'map_dir': str(map_dir), 'mode': 'teach',
                         'pose_topic': '/odom', 'device': 'cpu', 'map_frame': 'odom'},
                        factory=None)
    assert node.state == 'unconfigured'
    assert "posed in frame 'map'" in node.error and "frame 'odom'" in node.error
    assert 'map_frame' in node.error
    node.finish()
    assert MapDatabase.load(map_dir).manifest.map_id == map_id     # nothing written
