"""SLAM mode end to end with real rclpy and the bundled model on RTAB-Map's loop sample: a bag
replayed into the node publishes the loops ``vpr loops`` finds on the same bag, with this
session's exact stamps; a second session closes loops against the first one's saved map."""
import csv
from pathlib import Path

import cv2
from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
import pytest
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from ros_harness import call, wait_for
from vpr_core.mapdb.database import MapDatabase
from vpr_ros.bag_replay import BagPlayer, ReplayOptions
from vpr_ros.conversions import cloud_to_array, stamp_ns

pytestmark = pytest.mark.ros
DATA = Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data' / 'rtabmap_loop'
IMAGE_TOPIC = '/camera/image'
INFO_TOPIC = '/camera/camera_info'
START_NS = 1_700_000_000_123_456_789        # epoch-sized stamps with nanoseconds
PERIOD_NS = 1_000_000_000
# intrinsics of the bag's camera_info (the sample ships none; about 65 degrees across)
INTRINSICS = (400.0, 400.0, 255.5, 191.5)
RELIABLE = {f'qos_overrides.{topic}.subscription.reliability': 'reliable'
            for topic in (IMAGE_TOPIC + '/compressed', INFO_TOPIC)}

if not (DATA / 'samples' / '84.jpg').is_file():
    pytest.skip(f'rtabmap_loop sample not found at {DATA}', allow_module_level=True)


def write_bag(path: Path, frames: range, start_ns: int) -> list[int]:
    """The sample's JPEG frames (1-based names) as CompressedImage with a CameraInfo before
    each, 1 s apart from ``start_ns``; returns the image stamps (ns)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_typestore, Stores
    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    fx, fy, cx, cy = INTRINSICS
    stamps = []
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection(IMAGE_TOPIC + '/compressed',
                                       'sensor_msgs/msg/CompressedImage', typestore=store)
        infos = writer.add_connection(INFO_TOPIC, 'sensor_msgs/msg/CameraInfo', typestore=store)
        for k, frame in enumerate(frames):
            t_ns = start_ns + k * PERIOD_NS
            stamp = types['builtin_interfaces/msg/Time'](sec=t_ns // 10**9,
                                                         nanosec=t_ns % 10**9)
            header = types['std_msgs/msg/Header'](stamp=stamp, frame_id='camera_optical')
            roi = types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                            width=0, do_rectify=False)
            info = types['sensor_msgs/msg/CameraInfo'](
                header=header, height=384, width=512, distortion_model='plumb_bob',
                d=np.zeros(5), k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64),
                r=np.eye(3).reshape(9), p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0],
                                                   dtype=np.float64),
                binning_x=0, binning_y=0, roi=roi)
            writer.write(infos, t_ns - 1000, store.serialize_cdr(info,
                                                                 'sensor_msgs/msg/CameraInfo'))
            data = np.frombuffer((DATA / 'samples' / f'{frame}.jpg').read_bytes(), np.uint8)
            image = types['sensor_msgs/msg/CompressedImage'](header=header, format='jpeg',
                                                             data=data)
            writer.write(images, t_ns, store.serialize_cdr(image,
                                                           'sensor_msgs/msg/CompressedImage'))
            stamps.append(t_ns)
    return stamps


def slam_node(ros, map_dir: Path, name: str):
    node = ros.vpr_node({'mode': 'slam', 'map_dir': str(map_dir), 'device': 'cpu',
                         'image_topics': [IMAGE_TOPIC], 'input_transport': 'compressed',
                         'map_frame': 'odom', **RELIABLE}, factory=None, node_name=name)
    assert node.state == 'active', node.error
    return node


def replay(ros, node, bag: Path) -> dict:
    """Replay ``bag`` into ``node`` one frame at a time (each image is processed before the
    next goes out, as ``vpr loops`` reads them); the node's loop outputs."""
    probe = ros.probe(f'probe_{node.get_name()}')
    prefix = f'/{node.get_name()}'
    outputs = {'loops': probe.listen(Float64MultiArray, f'{prefix}/loop_closure'),
               'constraints': probe.listen(PoseWithCovarianceStamped,
                                           f'{prefix}/loop_constraint'),
               'clouds': probe.listen(PointCloud2, f'{prefix}/candidates_cloud')}
    player = ros.add(Node(f'player_{node.get_name()}', context=ros.context))
    sensors = node._pipeline.sensors
    published = {'images': 0, 'infos': 0}

    def wait_for_node(topic: str, _: int) -> None:
        if topic == INFO_TOPIC:
            published['infos'] += 1
            assert wait_for(lambda: sensors.camera_infos >= published['infos'], 30.0)
        else:
            published['images'] += 1
            assert wait_for(lambda: node.stats.processed >= published['images'], 60.0), \
                f"frame {published['images']} not processed: {node.stats.values(0)}"
    BagPlayer(player, bag, ReplayOptions(rate=1000.0, clock=False,
                                         wait_for_subscribers_s=10.0)).play(
        progress=False, on_publish=wait_for_node)
    assert wait_for(lambda: len(outputs['clouds']) == node.stats.accepted, 10.0)
    # [t_cur, t_prev] goes out after the cloud, and only for loops within this session
    assert wait_for(lambda: len(outputs['loops']) == sum(
        not cloud_to_array(m)[0]['previous_session'] for _, m in outputs['clouds']), 10.0)
    return {name: [message for _, message in messages] for name, messages in outputs.items()}


def index_of(stamps: list[int], seconds: float) -> int:
    """Stream index of the frame stamped ``seconds`` (within float64 resolution)."""
    index = int(np.argmin(np.abs(np.asarray(stamps) - seconds * 1e9)))
    assert abs(stamps[index] / 1e9 - seconds) < 1e-6
    return index


def cli_loops(bag: Path, out: Path, *extra: str) -> set[tuple[int, int]]:
    from vpr_core.cli import main
    assert main(['loops', '--bag', str(bag), '--image-topic', IMAGE_TOPIC + '/compressed',
                 '--camera-info-topic', INFO_TOPIC, '--out', str(out), '--device', 'cpu',
                 '--no-progress', *extra]) == 0
    with open(out / 'loops.csv', newline='') as handle:
        return {(int(row['query']), int(row['match'])) for row in csv.DictReader(handle)}


def published_pairs(outputs: dict, stamps: list[int], previous: list[int] = ()) -> set:
    """(query, match) stream indices of the accepted loops, read from the candidate clouds
    (rank 0 = the match); a match in the previous session as -1 - its index there (the CLI's
    convention). ``[t_cur, t_prev]`` goes out for exactly the loops within this session."""
    pairs, within = set(), set()
    for message in outputs['clouds']:
        first = cloud_to_array(message)[0]
        t_cur = stamp_ns(message.header.stamp) / 1e9
        t_prev = int(first['stamp_sec']) + int(first['stamp_nanosec']) / 1e9
        query = index_of(stamps, t_cur)
        if first['previous_session']:
            pairs.add((query, -1 - index_of(list(previous), t_prev)))
        else:
            pairs.add((query, index_of(stamps, t_prev)))
            within.add((t_cur, t_prev))
    closures = [tuple(message.data) for message in outputs['loops']]
    assert len(closures) == len(within)
    assert {(index_of(stamps, a), index_of(stamps, b)) for a, b in closures} == \
        {(index_of(stamps, a), index_of(stamps, b)) for a, b in within}
    return pairs


def test_replayed_bag_publishes_the_loops_of_vpr_loops_with_this_sessions_stamps(
        ros, tmp_path):
    stamps = write_bag(tmp_path / 'bag', range(1, 85), START_NS)
    node = slam_node(ros, tmp_path / 'map', 'vpr_slam')
    outputs = replay(ros, node, tmp_path / 'bag')
    expected = cli_loops(tmp_path / 'bag', tmp_path / 'cli')
    pairs = published_pairs(outputs, stamps)
    assert len(expected) >= 10, expected
    assert pairs == expected
    assert all(query > match >= 0 for query, match in pairs)
    status = node._pipeline.status()
    assert status['camera_model'] == 'camera_info 512x384' and status['database_size'] == '84'
    assert int(status['loops_accepted']) == len(pairs) == node.stats.accepted
    # the constraint and the cloud carry the exact header stamps of this session's frames
    constraints = {stamp_ns(m.header.stamp): m for m in outputs['constraints']}
    clouds = {stamp_ns(m.header.stamp): cloud_to_array(m) for m in outputs['clouds']}
    for message in outputs['loops']:
        t_cur, t_prev = message.data
        query, match = index_of(stamps, t_cur), index_of(stamps, t_prev)
        assert stamps[query] in constraints and constraints[stamps[query]].header.frame_id \
            == 'base_link'
        first = clouds[stamps[query]][0]
        assert first['rank'] == 0 and first['keyframe'] == match and not first['previous_session']
        assert int(first['stamp_sec']) * 10**9 + int(first['stamp_nanosec']) == stamps[match]
        covariance = np.asarray(constraints[stamps[query]].pose.covariance).reshape(6, 6)
        assert np.all(np.linalg.eigvalsh(covariance) > 0)
    print(f'SLAM node: {len(pairs)} loops, same pairs as vpr loops: {sorted(pairs)}')


def test_second_session_closes_loops_against_the_saved_first_session(ros, tmp_path):
    map_dir = tmp_path / 'map'
    first = write_bag(tmp_path / 'bag1', range(1, 41), START_NS)
    node = slam_node(ros, map_dir, 'vpr_session1')
    replay(ros, node, tmp_path / 'bag1')
    response = call(node, Trigger, '/vpr_session1/save_map', Trigger.Request())
    assert response.success, response.message
    assert 'saved map' in response.message and '40 of this session' in response.message
    assert MapDatabase.load(map_dir).size == 40
    node.finish()                                           # saves again on the way out
    start2 = START_NS + 3600 * 10**9                         # an hour later
    second = write_bag(tmp_path / 'bag2', range(41, 85), start2)
    node2 = slam_node(ros, map_dir, 'vpr_session2')
    assert node2._pipeline.status()['previous_keyframes'] == '40'
    outputs = replay(ros, node2, tmp_path / 'bag2')
    pairs = published_pairs(outputs, second, first)
    across = {(q, m) for q, m in pairs if m < 0}
    assert len(across) >= 10, pairs
    expected = cli_loops(tmp_path / 'bag2', tmp_path / 'cli', '--previous', str(map_dir))
    assert pairs == expected
    # a match in the first session is published with the first session's stamp and flag
    clouds = {stamp_ns(m.header.stamp): cloud_to_array(m)[0] for m in outputs['clouds']}
    for query, match in across:
        point = clouds[second[query]]
        assert point['previous_session'] and point['keyframe'] == -1 - match
        assert int(point['stamp_sec']) * 10**9 + int(point['stamp_nanosec']) == \
            first[-1 - match]
    truth = cv2.imread(str(DATA / 'samples_GT.bmp'), cv2.IMREAD_GRAYSCALE) > 0
    true = sum(bool(truth[40 + q, -1 - m]) for q, m in across)
    print(f'session 2: {len(across)} loops into session 1 ({true} true by the ground truth), '
          f'{len(pairs) - len(across)} within session 2; same pairs as vpr loops --previous')
    node2.finish()
    assert MapDatabase.load(map_dir).size == 84
