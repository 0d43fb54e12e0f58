"""Camera payloads -> RGB uint8 arrays, without cv_bridge.

The ROS node (rclpy messages) and the bag reader (rosbags messages) both hand the raw fields
of a ``sensor_msgs/Image`` or ``CompressedImage`` to these functions, so every encoding is
handled once. Colour conversions follow cv_bridge (including its Bayer naming).

Every decoder refuses an image larger than ``max_pixels`` (width x height) with
:class:`UnsupportedImageError` *before* allocating it: a raw image by its message fields, a
compressed one by its own header (JPEG SOF, PNG IHDR), read here with a few bytes of
``struct`` parsing. A 933-byte JPEG may claim 65000 x 65000 pixels; OpenCV would try to
allocate 12 GB (or raise ``cv2.error``). No ``cv2.error`` escapes a decoder either.

Image files (:func:`list_images`, :func:`load_image_file`) and the package's one image check
(:func:`check_rgb`, used by the encoders and by :mod:`vpr_core.preprocess`) live here too.
"""
from __future__ import annotations

from pathlib import Path
import struct

import cv2
import numpy as np

from vpr_core.errors import ConfigError, UnsupportedImageError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')

# encoding -> (channels, numpy dtype, cv2 conversion to RGB or None when already RGB/grey)
_RAW = {
    'rgb8': (3, np.uint8, None),
    'bgr8': (3, np.uint8, cv2.COLOR_BGR2RGB),
    '8UC3': (3, np.uint8, cv2.COLOR_BGR2RGB),
    'rgba8': (4, np.uint8, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, np.uint8, cv2.COLOR_BGRA2RGB),
    '8UC4': (4, np.uint8, cv2.COLOR_BGRA2RGB),
    'mono8': (1, np.uint8, cv2.COLOR_GRAY2RGB),
    '8UC1': (1, np.uint8, cv2.COLOR_GRAY2RGB),
    'mono16': (1, np.uint16, cv2.COLOR_GRAY2RGB),
    '16UC1': (1, np.uint16, cv2.COLOR_GRAY2RGB),
    'rgb16': (3, np.uint16, None),
    'bgr16': (3, np.uint16, cv2.COLOR_BGR2RGB),
    'rgba16': (4, np.uint16, cv2.COLOR_RGBA2RGB),
    'bgra16': (4, np.uint16, cv2.COLOR_BGRA2RGB),
    # cv_bridge maps ROS bayer_rggb8 to OpenCV's BayerBG code, and so on.
    'bayer_rggb8': (1, np.uint8, cv2.COLOR_BayerBG2RGB),
    'bayer_bggr8': (1, np.uint8, cv2.COLOR_BayerRG2RGB),
    'bayer_gbrg8': (1, np.uint8, cv2.COLOR_BayerGR2RGB),
    'bayer_grbg8': (1, np.uint8, cv2.COLOR_BayerGB2RGB),
    'yuv422': (2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
    'uyvy': (2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
    'yuv422_yuy2': (2, np.uint8, cv2.COLOR_YUV2RGB_YUY2),
    'yuyv': (2, np.uint8, cv2.COLOR_YUV2RGB_YUY2),
}
SUPPORTED_ENCODINGS = tuple(_RAW)
# 50 MP covers 8K video (7680 x 4320 = 33 MP) and 48 MP photo sensors (8000 x 6000) while an
# RGB8 copy stays at 150 MB; a header claiming more is refused unread. Raise it
# (``max_pixels=``, the node's ``max_image_pixels``) for larger imagery.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_JPEG_SIGNATURE = b'\xff\xd8'
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0..RST7.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_ENCODABLE = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16')


def decode_raw(encoding: str, height: int, width: int, step: int, is_bigendian: bool,
               data: bytes | bytearray | memoryview | np.ndarray, *,
               max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into an RGB image [H, W, 3] uint8.

    Row padding (``step``) and big-endian 16-bit data are honoured; 16-bit values are scaled
    to 8 bits over their full range, as cv_bridge does. More than ``max_pixels`` pixels:
    UnsupportedImageError.
    """
    if encoding not in _RAW:
        raise UnsupportedImageError(
            f"unsupported image encoding '{encoding}' (supported: "
            f"{', '.join(SUPPORTED_ENCODINGS)})")
    channels, dtype, conversion = _RAW[encoding]
    if height <= 0 or width <= 0:
        raise UnsupportedImageError(f'image has zero size ({width}x{height})')
    check_pixels(width, height, max_pixels, f'{encoding} image')
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise UnsupportedImageError(
            f'{encoding} image step {step} is smaller than width x pixel size {row_bytes}')
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) \
        else data.reshape(-1).view(np.uint8)
    if buffer.size != step * height:
        raise UnsupportedImageError(
            f'{encoding} image data has {buffer.size} bytes, expected step x height = '
            f'{step} x {height} = {step * height}')
    rows = buffer.reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(
        np.dtype(dtype).newbyteorder('>' if is_bigendian else '<'))
    pixels = pixels.reshape(height, width, channels).astype(dtype, copy=False)
    return _to_rgb8(pixels, conversion)


def decode_compressed(format: str, data: bytes | bytearray | memoryview | np.ndarray, *,
                      max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg or png) into RGB [H, W, 3] uint8.

    ``format`` is the message field, e.g. ``'jpeg'`` or ``'rgb8; jpeg compressed bgr8'``; the
    part after 'compressed' names the channel order of the payload (bgr unless it says rgb).
    The payload must be JPEG or PNG (what image_transport's compressed plugin sends: the
    formats whose size is checked against ``max_pixels`` before decoding).
    """
    text = (format or '').lower()
    if 'compresseddepth' in text.replace(' ', ''):
        raise UnsupportedImageError('compressedDepth images are depth maps, not camera images')
    buffer = _byte_array(data)
    if buffer.size == 0:
        raise UnsupportedImageError('compressed image has no data')
    what = f"compressed image (format '{format}')"
    size = compressed_size(buffer, what)
    if size is None:
        raise UnsupportedImageError(f'cannot decode {what}: the payload is neither JPEG nor PNG')
    check_pixels(*size, max_pixels, what)
    image = _imdecode(buffer, what, max_pixels)
    return _decoded_to_rgb8(image, 'compressed rgb' in text)


def compressed_size(data: bytes | bytearray | memoryview | np.ndarray,
                    what: str = 'image') -> tuple[int, int] | None:
    """(width, height) from a JPEG (SOF marker) or PNG (IHDR chunk) header, without decoding;
    None for another format. A truncated or malformed header: UnsupportedImageError."""
    buffer = _byte_array(data)
    view = memoryview(buffer)
    try:
        if view[:8] == _PNG_SIGNATURE:
            return _png_size(view)
        if view[:2] == _JPEG_SIGNATURE:
            return _jpeg_size(view)
    except (struct.error, IndexError) as exc:
        raise UnsupportedImageError(f'cannot decode {what}: truncated header') from exc
    except ValueError as exc:
        raise UnsupportedImageError(f'cannot decode {what}: {exc}') from exc
    return None


def check_pixels(width: int, height: int, max_pixels: int, what: str = 'image') -> None:
    """UnsupportedImageError when ``width`` x ``height`` is zero or exceeds ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise UnsupportedImageError(f'{what} has zero size ({width}x{height})')
    if width * height > max_pixels:
        raise UnsupportedImageError(
            f'{what} is {width}x{height} = {width * height:,} pixels, more than the '
            f'max_image_pixels cap of {max_pixels:,}; refused before decoding')


def _png_size(view: memoryview) -> tuple[int, int]:
    length, kind, width, height = struct.unpack_from('>I4sII', view, 8)
    if kind != b'IHDR' or length != 13:
        raise ValueError('PNG does not start with an IHDR chunk')
    return width, height


def _jpeg_size(view: memoryview) -> tuple[int, int]:
    position = 2
    while True:
        if view[position] != 0xFF:
            raise ValueError(f'JPEG marker expected at byte {position}')
        while view[position] == 0xFF:  # fill bytes may precede a marker
            position += 1
        marker = view[position]
        position += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0x00, 0xD8, 0xD9, 0xDA):
            raise ValueError(f'JPEG has no frame header (SOF) before marker 0x{marker:02X}')
        (length,) = struct.unpack_from('>H', view, position)
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from('>HH', view, position + 3)
            if height == 0:
                raise ValueError('JPEG height is defined after the scan (DNL), not supported')
            return width, height
        if length < 2:
            raise ValueError(f'JPEG segment length {length} at byte {position}')
        position += length


def encode_raw(rgb: np.ndarray, encoding: str = 'rgb8') -> tuple[int, bytes]:
    """Encode an RGB [H, W, 3] uint8 image as ``encoding``; returns (step, data)."""
    rgb = check_rgb(rgb)
    if encoding not in _ENCODABLE:
        raise UnsupportedImageError(
            f"cannot encode to '{encoding}' (supported: {', '.join(_ENCODABLE)})")
    if encoding == 'rgb8':
        out = rgb
    elif encoding == 'bgr8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == 'rgba8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif encoding == 'bgra8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif encoding == 'mono8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype('<u2') * 257
    out = np.ascontiguousarray(out)
    return out.shape[1] * out.itemsize * (out.shape[2] if out.ndim == 3 else 1), out.tobytes()


def encode_compressed(rgb: np.ndarray, kind: str = 'jpeg', quality: int = 95
                      ) -> tuple[str, bytes]:
    """Compress an RGB image like image_transport does; returns (format field, data)."""
    rgb = check_rgb(rgb)
    if kind not in ('jpeg', 'png'):
        raise UnsupportedImageError(f"unsupported compression '{kind}' (jpeg, png)")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if kind == 'jpeg' else []
    ok, payload = cv2.imencode('.jpg' if kind == 'jpeg' else '.png',
                               cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise UnsupportedImageError(f'{kind} encoding failed')
    return f'rgb8; {kind} compressed bgr8', payload.tobytes()


def load_image_file(path: str | Path, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
                    ) -> np.ndarray:
    """Read an image file (any format OpenCV reads) as RGB [H, W, 3] uint8.

    JPEG and PNG files larger than ``max_pixels`` are refused from their header; other
    formats are checked after decoding (OpenCV's own limit, OPENCV_IO_MAX_IMAGE_PIXELS,
    guards their allocation).
    """
    path = Path(path)
    if not path.is_file():
        raise UnsupportedImageError(f'image file not found: {path}')
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise UnsupportedImageError(f'cannot read image file {path}: {exc}') from exc
    what = f'image file {path}'
    if buffer.size == 0:
        raise UnsupportedImageError(f'cannot decode {what}: the file is empty')
    size = compressed_size(buffer, what)
    if size is not None:
        check_pixels(*size, max_pixels, what)
    return _decoded_to_rgb8(_imdecode(buffer, what, max_pixels), payload_rgb=False)


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f'image folder not found: {folder}')
    files = [p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def check_rgb(image: np.ndarray) -> np.ndarray:
    """Validate an image and return it as RGB [H, W, 3] uint8.

    Accepts [H, W] or [H, W, 1] grey (repeated to 3 channels) and [H, W, 3] RGB numpy arrays,
    dtype uint8, H and W > 0; anything else raises UnsupportedImageError saying what was
    expected. The one image check of the package (encoders, preprocessing).
    """
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(f'expected a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise UnsupportedImageError(f'expected dtype uint8 (RGB 0..255), got {image.dtype}')
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise UnsupportedImageError(f'expected an RGB image [H, W, 3] or grey [H, W], got shape '
                                    f'{image.shape}')
    if image.shape[2] not in (1, 3):
        raise UnsupportedImageError(f'expected 1 or 3 channels, got {image.shape[2]} '
                                    '(convert RGBA/BGRA to RGB first)')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise UnsupportedImageError(f'empty image: zero size {image.shape}')
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def _byte_array(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data.reshape(-1)).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def _imdecode(buffer: np.ndarray, what: str, max_pixels: int) -> np.ndarray:
    """cv2.imdecode, with every failure (None, cv2.error) as UnsupportedImageError."""
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        lines = str(exc).strip().splitlines() or ['cv2.error']
        raise UnsupportedImageError(f'cannot decode {what}: {lines[0]}') from exc
    if image is None or image.size == 0:
        raise UnsupportedImageError(f'cannot decode {what}')
    check_pixels(image.shape[1], image.shape[0], max_pixels, what)
    return image


def _decoded_to_rgb8(image: np.ndarray, payload_rgb: bool) -> np.ndarray:
    if image.ndim == 2:
        return _to_rgb8(image[:, :, None], cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 3:
        return _to_rgb8(image, None if payload_rgb else cv2.COLOR_BGR2RGB)
    if image.shape[2] == 4:
        return _to_rgb8(image, cv2.COLOR_RGBA2RGB if payload_rgb else cv2.COLOR_BGRA2RGB)
    raise UnsupportedImageError(f'decoded image has {image.shape[2]} channels')


def _to_rgb8(pixels: np.ndarray, conversion: int | None) -> np.ndarray:
    if pixels.dtype == np.uint16:
        pixels = (pixels.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if conversion is None:
        return np.ascontiguousarray(pixels)
    source = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    try:
        return cv2.cvtColor(np.ascontiguousarray(source), conversion)
    except cv2.error as exc:
        raise UnsupportedImageError(f'colour conversion failed: {exc}') from exc
