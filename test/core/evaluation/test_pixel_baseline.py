"""The pixel baseline has one implementation, shared by the evaluator and the map source, and it
gives bit-identical vectors to the evaluator's original code on real Nordland frames."""
import cv2
import numpy as np

from vpr_core.evaluation import baseline
from vpr_core.image import load_image_file
from vpr_core.mapdb import pixel
from vpr_core.mapdb.pixel import PixelDescriptors


def reference_describe_pixels(images, size=(32, 64), patch=8):
    """The evaluator's code before the consolidation, verbatim but for names."""
    rows = []
    for image in images:
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        if grey.shape != size:
            grey = cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        grey = grey.astype(np.float32)
        height, width = grey.shape
        blocks = grey.reshape(height // patch, patch, width // patch, patch)
        mean = blocks.mean(axis=(1, 3), keepdims=True)
        std = blocks.std(axis=(1, 3), keepdims=True)
        rows.append(((blocks - mean) / np.maximum(std, 1e-6)).reshape(-1))
    return np.stack(rows).astype(np.float32)


def nordland_frames(root, season, count=40):
    files = sorted((root / season).glob('*.png'))[1800:1800 + count]
    return [load_image_file(path) for path in files]


def test_one_implementation_serves_both():
    assert baseline.describe_pixels is pixel.describe_pixels
    assert (baseline.DEFAULT_SIZE, baseline.DEFAULT_PATCH) == ((32, 64), 8)


def test_baseline_vectors_are_unchanged_and_distances_are_mean_absolute(nordland):
    summer, winter = nordland_frames(nordland, 'summer'), nordland_frames(nordland, 'winter')
    resized = [cv2.resize(image, (200, 90)) for image in winter[:8]]
    for images in (summer, winter, resized):
        np.testing.assert_array_equal(baseline.describe_pixels(images),
                                      reference_describe_pixels(images))
    queries, database = reference_describe_pixels(winter), reference_describe_pixels(summer)
    brute = np.abs(queries[:, None, :] - database[None]).mean(-1)
    np.testing.assert_allclose(baseline.pixel_distances(queries, database), brute, rtol=1e-5)


def test_map_source_floats_are_the_normalised_baseline(nordland):
    winter = nordland_frames(nordland, 'winter', 20)
    source = PixelDescriptors(code_bits=64)
    floats = reference_describe_pixels(winter)
    floats /= np.maximum(np.linalg.norm(floats, axis=1, keepdims=True), 1e-12)
    described = source.extract(winter)
    np.testing.assert_array_equal(described.floats, floats)
    np.testing.assert_array_equal(described.codes, source.codes_of(floats))
