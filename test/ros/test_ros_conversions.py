"""Message <-> numpy conversions (no DDS needed)."""
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from vpr_core.errors import UnsupportedImageError
from vpr_core.image import encode_compressed, encode_raw
from vpr_ros.conversions import (candidates_cloud, cloud_to_array, image_to_rgb,
                                 loop_closure_message, pose_array_message, pose_message,
                                 pose_vector, rejection_reason, stamp_from_seconds,
                                 stamp_seconds)


def rgb_image(height=5, width=7):
    return np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_raw_colour_round_trip(encoding):
    rgb = rgb_image()
    step, data = encode_raw(rgb, encoding)
    message = Image(height=5, width=7, encoding=encoding, step=step, data=data)
    assert np.array_equal(image_to_rgb(message), rgb)


def test_mono_becomes_three_channels_and_png_is_lossless():
    rgb = rgb_image()
    step, data = encode_raw(rgb, 'mono8')
    grey = image_to_rgb(Image(height=5, width=7, encoding='mono8', step=step, data=data))
    assert grey.shape == (5, 7, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    fmt, payload = encode_compressed(rgb, 'png')
    assert np.array_equal(image_to_rgb(CompressedImage(format=fmt, data=payload)), rgb)


@pytest.mark.parametrize('change, reason', [
    (dict(encoding='weird'), 'unknown_encoding'),
    (dict(height=0, width=0, step=0, data=b''), 'zero_size'),
    (dict(data=bytes(10)), 'wrong_data_length'),
])
def test_bad_raw_frames_raise_and_are_classified(change, reason):
    step, data = encode_raw(rgb_image(), 'rgb8')
    message = Image(height=5, width=7, encoding='rgb8', step=step, data=data)
    for key, value in change.items():
        setattr(message, key, value)
    with pytest.raises(UnsupportedImageError):
        image_to_rgb(message)
    assert rejection_reason(message) == reason


def test_bad_compressed_frames():
    for data, reason in ((b'', 'empty_payload'), (b'\xff\xd8garbage', 'corrupt_payload'),
                         (b'GIF89a' + bytes(30), 'unknown_format')):
        message = CompressedImage(format='jpeg', data=data)
        with pytest.raises(UnsupportedImageError):
            image_to_rgb(message)
        assert rejection_reason(message) == reason


def test_frames_over_the_pixel_cap_are_too_large():
    rgb = rgb_image()
    fmt, payload = encode_compressed(rgb, 'png')
    compressed = CompressedImage(format=fmt, data=payload)
    step, data = encode_raw(rgb, 'rgb8')
    raw = Image(height=5, width=7, encoding='rgb8', step=step, data=data)
    for message in (compressed, raw):
        assert image_to_rgb(message, max_pixels=35).shape == (5, 7, 3)
        with pytest.raises(UnsupportedImageError, match='7x5 = 35 pixels'):
            image_to_rgb(message, max_pixels=34)
        assert rejection_reason(message, max_pixels=34) == 'too_large'


def test_stamps_round_trip():
    stamp = stamp_from_seconds(1712345678.123456789)
    assert stamp.sec == 1712345678 and abs(stamp.nanosec - 123456789) <= 256
    assert stamp_seconds(stamp) == pytest.approx(1712345678.123456789, abs=1e-6)


def test_pose_quaternion_is_normalised():
    message = pose_message([1, 2, 3, 0, 0, 2, 0])
    assert pose_vector(message) == pytest.approx([1, 2, 3, 0, 0, 1, 0])
    assert pose_vector(pose_message([0, 0, 0, 0, 0, 0, 0]))[3:] == pytest.approx([0, 0, 0, 1])


def test_cloud_round_trip_and_layout():
    positions = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [-1.0, 0.5, 0.0]])
    cloud = candidates_cloud(stamp_from_seconds(5.0), 'map', positions, [0.9, 0.5, 0.1],
                             [7, 70000, 3], [0, 1, 2])
    assert cloud.header.frame_id == 'map' and cloud.width == 3 and cloud.height == 1
    assert cloud.point_step == 24 and cloud.row_step == 72 and len(cloud.data) == 72
    points = cloud_to_array(cloud)
    assert np.allclose(np.stack([points['x'], points['y'], points['z']], 1), positions)
    assert points['score'] == pytest.approx([0.9, 0.5, 0.1])
    assert list(points['place_id']) == [7, 70000, 3] and list(points['rank']) == [0, 1, 2]
    empty = candidates_cloud(stamp_from_seconds(5.0), 'map', np.zeros((0, 3)), [], [], [])
    assert empty.width == 0 and len(cloud_to_array(empty)) == 0


def test_pose_array_and_loop_closure():
    poses = np.array([[1, 0, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0, 1]], dtype=float)
    array = pose_array_message(stamp_from_seconds(3.0), 'map', poses)
    assert [p.position.x for p in array.poses] == [1.0, 2.0]
    loop = loop_closure_message(10.5, 3.25)
    assert list(loop.data) == [10.5, 3.25]
