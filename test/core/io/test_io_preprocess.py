"""Preprocessing: resize the uint8 image, then float [0, 1] and ImageNet-normalise; within a
stated tolerance of the seeds' order (normalise the full-size float image, then resize)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_core.errors import UnsupportedImageError
from vpr_core.image import check_rgb, load_image_file
from vpr_core.model.config import PreprocessConfig
from vpr_core.preprocess import preprocess_batch, preprocess_image, preprocess_reference

DATA = Path(__file__).resolve().parents[3] / '..' / 'shared' / 'data'
# One grey level after the ImageNet std (0.224 for the smallest): what uint8 rounding of the
# resized pixels and OpenCV's 11-bit fixed-point weights can move a value by.
ONE_LEVEL = 1.0 / 255.0 / 0.224

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


def _real_photos():
    files = sorted((DATA / 'rtabmap_loop' / 'samples').glob('*.jpg')) + \
        sorted((DATA / 'vpr_methods_eval_toy').rglob('*.jpg'))
    if len(files) < 50:
        pytest.skip(f'real photos not found under {DATA}')
    return [load_image_file(path) for path in files]


def _random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_matches_hand_written_normalise_then_bilinear_within_one_grey_level():
    for h, w in ((37, 61), (140, 210), (20, 15)):          # shrink, shrink more, enlarge
        image = _random_image(h, w)
        normalised = (image.astype(np.float64) / 255.0 - MEAN) / STD
        expected = _numpy_bilinear(normalised, 28, 42).transpose(2, 0, 1)
        got = preprocess_image(image, CFG).numpy()
        assert got.shape == (3, 28, 42) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=ONE_LEVEL)
        reference = preprocess_reference([image], CFG)[0].numpy()
        np.testing.assert_allclose(reference, expected, atol=2e-5)


@pytest.mark.parametrize('antialias', [False, True])
def test_real_photos_stay_within_one_grey_level_of_the_published_order(antialias):
    photos = _real_photos()
    std = torch.tensor(CFG.std).view(1, 3, 1, 1)
    for size in ((32, 64), (322, 322)):
        cfg = PreprocessConfig(test_size=size, antialias=antialias)
        got, reference = preprocess_batch(photos, cfg), preprocess_reference(photos, cfg)
        levels = (got - reference).abs() * std * 255.0      # back to grey levels
        # measured: max 0.78 (bilinear), 1.003 (antialias: its weights are fixed-point too)
        assert levels.max().item() <= 1.05
        assert levels.mean().item() < 0.3


def test_bundled_model_descriptors_stay_close_to_the_published_order():
    """106 real photos (512x384 .. 826x480) through the bundled model (input 64x32).

    Measured: cosine >= 0.9997, max abs 4.3e-3, 0.3% of the code bits flip (at most 4 of
    256 in one image), all from sub-grey-level pixel rounding."""
    from vpr_core.model.checkpoint import default_model_path, load_model
    photos = _real_photos()
    model = load_model(default_model_path())
    with torch.no_grad():
        new = model.descriptors(preprocess_batch(photos, model.config.preprocess))
        old = model.descriptors(preprocess_reference(photos, model.config.preprocess))
    new_floats, old_floats = (torch.nn.functional.normalize(out[0], dim=-1) for out in (new, old))
    assert (new_floats * old_floats).sum(-1).min().item() > 0.999
    assert (new_floats - old_floats).abs().max().item() < 1e-2
    flips = (new[1] != old[1]).float()
    assert flips.mean().item() < 0.01 and flips.sum(-1).max().item() <= 8


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
    assert np.array_equal(check_rgb(gray), rgb)
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
