"""``vpr bag-replay``: a rosbag2 (MCAP and sqlite3) published into ROS 2 with /clock."""
import threading
import time

from nav_msgs.msg import Odometry
import pytest
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from ros_harness import wait_for, write_image_bag
from vpr_core.errors import BagError
from vpr_ros.bag_replay import BagPlayer, message_class, ReplayOptions
from vpr_ros.conversions import stamp_seconds

pytestmark = pytest.mark.ros


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_replay_publishes_every_message_with_clock(ros, tmp_path, storage):
    stamps = write_image_bag(tmp_path / 'bag', storage, count=10, period_s=0.2)
    probe = ros.probe()
    images = probe.listen(Image, '/replayed/image')
    odometry = probe.listen(Odometry, '/odom')
    clock = probe.listen(Clock, '/clock')
    player_node = ros.add(Node('player', context=ros.context))
    options = ReplayOptions(rate=4.0, remap=(('/camera/image', '/replayed/image'),),
                            wait_for_subscribers_s=5.0)
    start = time.monotonic()
    stats = BagPlayer(player_node, tmp_path / 'bag', options).play(progress=False)
    wall_s = time.monotonic() - start
    assert stats.published == {'/replayed/image': 10, '/odom': 10}
    assert wait_for(lambda: len(images) == 10 and len(odometry) == 10)
    assert [stamp_seconds(m.header.stamp) for _, m in images] == pytest.approx(stamps)
    assert [m.data[0] for _, m in images] == list(range(10))
    assert odometry[-1][1].pose.pose.position.x == 9.0
    # 1.8 s of bag at 4x: 0.45 s of replay, recorded spacing kept
    assert 0.44 < stats.wall_s < 3.0 and wall_s < 10.0
    gaps = [b[0] - a[0] for a, b in zip(images, images[1:])]
    assert 0.02 < sum(gaps) / len(gaps) < 0.35
    clock_times = [stamp_seconds(m.clock) for _, m in clock]
    assert clock_times == sorted(clock_times)
    assert clock_times[0] >= stamps[0] and clock_times[-1] == pytest.approx(stamps[-1] + 1e-6)


def test_replay_selects_topics_and_stops(ros, tmp_path):
    write_image_bag(tmp_path / 'bag', 'mcap', count=50, period_s=0.1)
    player_node = ros.add(Node('player', context=ros.context))
    player = BagPlayer(player_node, tmp_path / 'bag',
                       ReplayOptions(topics=('/odom',), clock=False))
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    stats = player.play(stop=stop, progress=False)
    assert set(stats.published) == {'/odom'} and 2 <= stats.total < 50


def test_replay_errors_name_the_problem(ros, tmp_path):
    write_image_bag(tmp_path / 'bag', 'mcap', count=2)
    player_node = ros.add(Node('player', context=ros.context))
    with pytest.raises(BagError, match=r"\['/nope'\] are not in .*available"):
        BagPlayer(player_node, tmp_path / 'bag', ReplayOptions(topics=('/nope',))).play()
    with pytest.raises(BagError, match='cannot read bag'):
        BagPlayer(player_node, tmp_path / 'missing').play()
    with pytest.raises(BagError, match='rate must be > 0'):
        BagPlayer(player_node, tmp_path / 'bag', ReplayOptions(rate=0.0))
    with pytest.raises(BagError, match="install the 'no_such_msgs'"):
        message_class('no_such_msgs/msg/Thing')


def test_replay_names_best_effort_subscribers(ros, tmp_path):
    from rclpy.qos import qos_profile_sensor_data
    write_image_bag(tmp_path / 'bag', 'mcap', count=3, period_s=0.05)
    probe = ros.probe()
    probe.listen(Image, '/camera/image', qos_profile_sensor_data)
    probe.listen(Odometry, '/odom')
    player_node = ros.add(Node('player', context=ros.context))
    stats = BagPlayer(player_node, tmp_path / 'bag',
                      ReplayOptions(wait_for_subscribers_s=5.0)).play(progress=False)
    assert stats.best_effort_subscribers == {'/camera/image': ['/probe']}
