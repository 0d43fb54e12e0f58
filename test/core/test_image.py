"""Camera payload decoding: every encoding, padding, endianness and bad input."""
import struct
import tracemalloc

import cv2
import numpy as np
import pytest

from vpr_core.errors import UnsupportedImageError
from vpr_core.image import check_rgb, compressed_size, decode_compressed, decode_raw
from vpr_core.image import DEFAULT_MAX_IMAGE_PIXELS, encode_compressed, encode_raw
from vpr_core.image import load_image_file

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
    assert np.array_equal(check_rgb(RGB[:, :, :1]), np.repeat(RGB[:, :, :1], 3, axis=2))
    assert check_rgb(RGB) is RGB
    for bad, message in [(RGB.astype(np.float32), 'dtype uint8'),
                         (np.zeros((0, 4, 3), np.uint8), 'empty image: zero size'),
                         (np.zeros((6, 8, 4), np.uint8), '1 or 3 channels'),
                         (np.zeros((2, 6, 8, 3), np.uint8), 'shape'),
                         (RGB.tolist(), 'numpy array')]:
        with pytest.raises(UnsupportedImageError, match=message):
            check_rgb(bad)


def jpeg_claiming(width, height, progressive=False):
    """A valid small JPEG whose frame header (SOF) is patched to claim ``width`` x ``height``."""
    ok, payload = cv2.imencode('.jpg', RGB, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    data = bytearray(payload.tobytes())
    sof = data.find(b'\xff\xc2' if progressive else b'\xff\xc0')
    assert sof > 0
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


def png_claiming(width, height):
    """A valid small PNG whose IHDR is patched to claim ``width`` x ``height`` (bad CRC)."""
    data = bytearray(encode_compressed(RGB, 'png')[1])
    data[16:24] = struct.pack('>II', width, height)
    return bytes(data)


@pytest.mark.parametrize('progressive', [False, True])
def test_jpeg_header_gives_the_size(progressive):
    ok, payload = cv2.imencode('.jpg', RGB, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert compressed_size(payload.tobytes()) == (8, 6)
    assert compressed_size(jpeg_claiming(640, 480, progressive)) == (640, 480)
    # fill bytes before a marker are legal (ITU T.81 B.1.1.2)
    padded = payload.tobytes()[:2] + b'\xff\xff' + payload.tobytes()[2:]
    assert compressed_size(padded) == (8, 6)


def test_png_header_gives_the_size():
    assert compressed_size(encode_compressed(RGB, 'png')[1]) == (8, 6)
    assert compressed_size(png_claiming(100000, 3)) == (100000, 3)
    assert compressed_size(b'BM not a png or jpeg') is None


@pytest.mark.parametrize('cut', [3, 4, 6, 20, 'before_sof'])
def test_truncated_jpeg_header_is_refused(cut):
    data = encode_compressed(RGB, 'jpeg')[1]
    end = data.find(b'\xff\xc0') + 6 if cut == 'before_sof' else cut
    with pytest.raises(UnsupportedImageError, match='truncated header'):
        decode_compressed('jpeg', data[:end])


def test_truncated_png_header_is_refused():
    data = encode_compressed(RGB, 'png')[1]
    with pytest.raises(UnsupportedImageError, match='truncated header'):
        compressed_size(data[:20])
    with pytest.raises(UnsupportedImageError, match='IHDR'):
        compressed_size(data[:12] + b'IDAT' + data[16:])


@pytest.mark.parametrize('payload', [jpeg_claiming(65000, 65000), png_claiming(65000, 65000)])
def test_cap_names_size_and_limit(payload):
    with pytest.raises(UnsupportedImageError, match=r'65000x65000 = 4,225,000,000 pixels, '
                       r'more than the max_image_pixels cap of 50,000,000'):
        decode_compressed('jpeg', payload)
    assert DEFAULT_MAX_IMAGE_PIXELS == 50_000_000


def test_cap_is_a_keyword():
    assert decode_compressed('jpeg', jpeg_claiming(8, 6), max_pixels=48).shape == (6, 8, 3)
    with pytest.raises(UnsupportedImageError, match='8x6 = 48 pixels'):
        decode_compressed('jpeg', jpeg_claiming(8, 6), max_pixels=47)
    step, data = encode_raw(RGB, 'rgb8')
    assert decode_raw('rgb8', 6, 8, step, False, data, max_pixels=48).shape == (6, 8, 3)
    with pytest.raises(UnsupportedImageError, match='max_image_pixels cap of 47'):
        decode_raw('rgb8', 6, 8, step, False, data, max_pixels=47)


def test_huge_raw_header_is_refused_before_its_data_is_read():
    with pytest.raises(UnsupportedImageError, match='65000x65000'):
        decode_raw('rgb8', 65000, 65000, 195000, False, b'\x00' * 16)


def test_8000x8000_header_is_refused_without_allocation():
    tracemalloc.start()
    try:
        with pytest.raises(UnsupportedImageError, match='8000x8000'):
            decode_compressed('jpeg', jpeg_claiming(8000, 8000))
        refused_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        # control: the same trick under a cap it fits is decoded in full, and traced
        assert decode_compressed('jpeg', jpeg_claiming(1000, 1000),
                                 max_pixels=10**6).shape == (1000, 1000, 3)
        decoded_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused_peak < 200_000 and decoded_peak > 3_000_000


def test_opencv_errors_become_unsupported_image_errors():
    # 40000 x 30000 passes a raised cap but exceeds OpenCV's own limit: cv2.imdecode raises.
    with pytest.raises(cv2.error):
        cv2.imdecode(np.frombuffer(jpeg_claiming(40000, 30000), np.uint8),
                     cv2.IMREAD_UNCHANGED)
    with pytest.raises(UnsupportedImageError, match='cannot decode'):
        decode_compressed('jpeg', jpeg_claiming(40000, 30000), max_pixels=2 * 10**9)


def test_garbage_payload_is_refused():
    with pytest.raises(UnsupportedImageError, match='neither JPEG nor PNG'):
        decode_compressed('jpeg', bytes(range(256)) * 4)


def test_load_image_file_refuses_a_huge_header(tmp_path):
    path = tmp_path / 'huge.jpg'
    path.write_bytes(jpeg_claiming(65000, 65000))
    with pytest.raises(UnsupportedImageError, match='huge.jpg is 65000x65000'):
        load_image_file(path)
    path.write_bytes(jpeg_claiming(8, 6))
    assert load_image_file(path).shape == (6, 8, 3)
    with pytest.raises(UnsupportedImageError, match='cap of 10'):
        load_image_file(path, max_pixels=10)
