"""Camera payload decoding: every encoding, padding, endianness and bad input."""
import cv2
import numpy as np
import pytest

from vpr_core.errors import UnsupportedImageError
from vpr_core.image import check_rgb, decode_compressed, decode_raw, encode_compressed
from vpr_core.image import encode_raw, load_image_file

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_colour_encodings_round_trip(encoding):
    step, data = encode_raw(RGB, encoding)
    assert np.array_equal(decode_raw(encoding, 6, 8, step, False, data), RGB)


def test_mono_encodings_replicate_grey():
    grey = cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY)
    for encoding in ('mono8', 'mono16'):
        step, data = encode_raw(RGB, encoding)
        out = decode_raw(encoding, 6, 8, step, False, data)
        assert out.shape == (6, 8, 3)
        assert np.array_equal(out[:, :, 0], grey) and np.array_equal(out[:, :, 2], grey)


def test_mono16_big_endian_and_full_range_scaling():
    values = np.array([[0, 257, 65535]], dtype='>u2')
    out = decode_raw('mono16', 1, 3, 6, True, values.tobytes())
    assert out[0, :, 0].tolist() == [0, 1, 255]


def test_row_padding_is_ignored():
    step, data = encode_raw(RGB, 'rgb8')
    padded = b''.join(data[r * step:(r + 1) * step] + b'\x07' * 5 for r in range(6))
    assert np.array_equal(decode_raw('rgb8', 6, 8, step + 5, False, padded), RGB)


def test_bayer_matches_opencv_demosaic():
    mosaic = RNG.integers(0, 256, size=(6, 8), dtype=np.uint8)
    out = decode_raw('bayer_rggb8', 6, 8, 8, False, mosaic.tobytes())
    assert np.array_equal(out, cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2RGB))


def test_yuv422_decodes_to_rgb():
    uyvy = RNG.integers(0, 256, size=(6, 8, 2), dtype=np.uint8)
    out = decode_raw('yuv422', 6, 8, 16, False, uyvy.tobytes())
    assert np.array_equal(out, cv2.cvtColor(uyvy, cv2.COLOR_YUV2RGB_UYVY))


@pytest.mark.parametrize('encoding,height,width,step,size,match', [
    ('32FC1', 6, 8, 32, 192, 'unsupported image encoding'),
    ('rgb8', 0, 8, 24, 0, 'zero size'),
    ('rgb8', 6, 8, 24, 100, 'expected step x height'),
    ('rgb8', 6, 8, 10, 60, 'smaller than width'),
])
def test_bad_raw_images_raise(encoding, height, width, step, size, match):
    with pytest.raises(UnsupportedImageError, match=match):
        decode_raw(encoding, height, width, step, False, bytes(size))


def test_png_round_trip_is_exact():
    fmt, data = encode_compressed(RGB, 'png')
    assert np.array_equal(decode_compressed(fmt, data), RGB)


def test_jpeg_round_trip_keeps_colours():
    smooth = np.repeat(np.repeat(RGB, 8, axis=0), 8, axis=1)
    out = decode_compressed(*encode_compressed(smooth, 'jpeg'))
    error = np.abs(out.astype(int) - smooth.astype(int))
    swapped = np.abs(out[:, :, ::-1].astype(int) - smooth.astype(int))
    assert error.mean() < 12 and swapped.mean() > 3 * error.mean()


def test_compressed_rgb_payload_is_not_swapped():
    ok, data = cv2.imencode('.png', RGB)  # written as if BGR: the payload holds RGB order
    assert ok
    assert np.array_equal(decode_compressed('rgb8; png compressed rgb8', data.tobytes()), RGB)
    assert np.array_equal(decode_compressed('png', data.tobytes()), RGB[:, :, ::-1])


@pytest.mark.parametrize('fmt,data,match', [
    ('jpeg', b'', 'no data'),
    ('jpeg', b'\xff\xd8\xff\xe0 definitely not a jpeg', 'cannot decode'),
    ('16UC1; compressedDepth', b'\x00' * 20, 'depth'),
])
def test_bad_compressed_images_raise(fmt, data, match):
    with pytest.raises(UnsupportedImageError, match=match):
        decode_compressed(fmt, data)


def test_load_image_file(tmp_path):
    path = tmp_path / 'frame.png'
    cv2.imwrite(str(path), cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    assert np.array_equal(load_image_file(path), RGB)
    (tmp_path / 'broken.png').write_bytes(b'\x89PNG truncated')
    with pytest.raises(UnsupportedImageError, match='broken.png'):
        load_image_file(tmp_path / 'broken.png')
    with pytest.raises(UnsupportedImageError, match='not found'):
        load_image_file(tmp_path / 'missing.png')


def test_check_rgb_validates():
    assert check_rgb(RGB[:, :, 0]).shape == (6, 8, 3)
    with pytest.raises(UnsupportedImageError):
        check_rgb(RGB.astype(np.float32))
    with pytest.raises(UnsupportedImageError):
        check_rgb(np.zeros((0, 4, 3), np.uint8))
