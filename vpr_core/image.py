"""Camera payloads -> RGB uint8 arrays, without cv_bridge.

The ROS node (rclpy messages) and the bag reader (rosbags messages) both hand the raw fields
of a ``sensor_msgs/Image`` or ``CompressedImage`` to these functions, so every encoding is
handled once. Colour conversions follow cv_bridge (including its Bayer naming).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vpr_core.errors import UnsupportedImageError

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
_ENCODABLE = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16')


def decode_raw(encoding: str, height: int, width: int, step: int, is_bigendian: bool,
               data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` into an RGB image [H, W, 3] uint8.

    Row padding (``step``) and big-endian 16-bit data are honoured; 16-bit values are scaled
    to 8 bits over their full range, as cv_bridge does.
    """
    if encoding not in _RAW:
        raise UnsupportedImageError(
            f"unsupported image encoding '{encoding}' (supported: "
            f"{', '.join(SUPPORTED_ENCODINGS)})")
    channels, dtype, conversion = _RAW[encoding]
    if height <= 0 or width <= 0:
        raise UnsupportedImageError(f'image has zero size ({width}x{height})')
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


def decode_compressed(format: str, data: bytes | bytearray | memoryview | np.ndarray
                      ) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg or png) into RGB [H, W, 3] uint8.

    ``format`` is the message field, e.g. ``'jpeg'`` or ``'rgb8; jpeg compressed bgr8'``; the
    part after 'compressed' names the channel order of the payload (bgr unless it says rgb).
    """
    text = (format or '').lower()
    if 'compresseddepth' in text.replace(' ', ''):
        raise UnsupportedImageError('compressedDepth images are depth maps, not camera images')
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) \
        else data.reshape(-1).view(np.uint8)
    if buffer.size == 0:
        raise UnsupportedImageError('compressed image has no data')
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise UnsupportedImageError(f"cannot decode compressed image (format '{format}')")
    payload_rgb = 'compressed rgb' in text
    return _decoded_to_rgb8(image, payload_rgb)


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


def load_image_file(path: str | Path) -> np.ndarray:
    """Read an image file (any format OpenCV reads) as RGB [H, W, 3] uint8."""
    path = Path(path)
    if not path.is_file():
        raise UnsupportedImageError(f'image file not found: {path}')
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise UnsupportedImageError(f'cannot decode image file {path}')
    return _decoded_to_rgb8(image, payload_rgb=False)


def check_rgb(image: np.ndarray) -> np.ndarray:
    """Validate an RGB [H, W, 3] uint8 image (grey [H, W] is expanded); returns it."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise UnsupportedImageError(f'expected an RGB image [H, W, 3], got shape {image.shape}')
    if image.dtype != np.uint8:
        raise UnsupportedImageError(f'expected uint8 pixels, got {image.dtype}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise UnsupportedImageError(f'image has zero size {image.shape}')
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
