"""Preprocessing: float [0, 1], ImageNet-normalise, then resize (the seeds' test order)."""
import numpy as np
import pytest
import torch

from vpr_core.errors import UnsupportedImageError
from vpr_core.model.config import PreprocessConfig
from vpr_core.preprocess import check_image, preprocess_batch, preprocess_image

CFG = PreprocessConfig(test_size=(28, 42))
MEAN = np.array(CFG.mean, dtype=np.float64)
STD = np.array(CFG.std, dtype=np.float64)


def _numpy_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of [H, W, C] without antialias, written out by hand."""
    in_h, in_w = image.shape[:2]

    def taps(out_n, in_n):
        src = np.maximum((np.arange(out_n) + 0.5) * in_n / out_n - 0.5, 0.0)
        low = np.minimum(np.floor(src).astype(int), in_n - 1)
        high = np.minimum(low + 1, in_n - 1)
        return low, high, src - low

    y0, y1, wy = taps(out_h, in_h)
    x0, x1, wx = taps(out_w, in_w)
    top = image[y0][:, x0] * (1 - wx)[None, :, None] + image[y0][:, x1] * wx[None, :, None]
    bottom = image[y1][:, x0] * (1 - wx)[None, :, None] + image[y1][:, x1] * wx[None, :, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


def _random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_matches_hand_written_normalise_then_bilinear():
    image = _random_image(37, 61)
    normalised = (image.astype(np.float64) / 255.0 - MEAN) / STD
    expected = _numpy_bilinear(normalised, 28, 42).transpose(2, 0, 1)
    got = preprocess_image(image, CFG).numpy()
    assert got.shape == (3, 28, 42) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_same_size_is_exact_normalisation():
    image = _random_image(28, 42)
    expected = ((image.astype(np.float64) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(preprocess_image(image, CFG).numpy(), expected, atol=1e-6)


def test_antialias_flag_is_honoured_on_downscale():
    image = _random_image(140, 210)
    plain = preprocess_image(image, CFG)
    smooth = preprocess_image(image, PreprocessConfig(test_size=(28, 42), antialias=True))
    assert not torch.allclose(plain, smooth, atol=1e-3)
    assert smooth.std() < plain.std()       # antialias averages more pixels


def test_grayscale_becomes_three_equal_channels():
    gray = _random_image(30, 40)[:, :, 0]
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    assert np.array_equal(check_image(gray), rgb)
    assert torch.equal(preprocess_image(gray, CFG), preprocess_image(rgb, CFG))
    assert torch.equal(preprocess_image(gray[:, :, None], CFG), preprocess_image(rgb, CFG))


def test_batch_equals_images_one_by_one():
    same = [_random_image(50, 70, seed) for seed in range(3)]
    mixed = same[:2] + [_random_image(20, 90, 7)]
    for images in (same, mixed):
        batch = preprocess_batch(images, CFG)
        assert batch.shape == (3, 3, 28, 42)
        for row, image in zip(batch, images):
            assert torch.equal(row, preprocess_image(image, CFG))


def test_size_argument_overrides_test_size():
    assert preprocess_batch([_random_image(30, 30)], CFG, size=(14, 28)).shape == (1, 3, 14, 28)


@pytest.mark.parametrize('bad, message', [
    (np.zeros((10, 10, 3), np.float32), 'uint8'),
    (np.zeros((10, 10, 4), np.uint8), '1 or 3 channels'),
    (np.zeros((0, 10, 3), np.uint8), 'empty'),
    (np.zeros((2, 10, 10, 3), np.uint8), 'shape'),
    ([[0, 1], [2, 3]], 'numpy array'),
])
def test_bad_input_is_rejected(bad, message):
    with pytest.raises(UnsupportedImageError, match=message):
        preprocess_image(bad, CFG)


def test_empty_batch_is_rejected():
    with pytest.raises(UnsupportedImageError, match='at least one'):
        preprocess_batch([], CFG)
