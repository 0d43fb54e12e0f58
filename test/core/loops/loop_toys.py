"""A toy model for the loop-closure tests: flat images that name their place."""
import numpy as np

from vpr_core.descriptors import Descriptors, pack_codes


class PlaceExtractor:
    """Toy model: an image whose pixels all equal p shows place p; its descriptor is place
    p's fixed random unit vector (plus a little noise from the green channel)."""

    fingerprint = 'toy-places'
    descriptor_dim = 32
    code_bits = 32
    model_config = None

    def __init__(self, places: int = 256, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        base = rng.standard_normal((places, self.descriptor_dim)).astype(np.float32)
        self.base = base / np.linalg.norm(base, axis=1, keepdims=True)
        self.noise = rng.standard_normal((256, self.descriptor_dim)).astype(np.float32) * 0.05

    def extract(self, images) -> Descriptors:
        rows = []
        for image in images:
            row = self.base[int(image[0, 0, 0])] + self.noise[int(image[0, 0, 1])]
            rows.append(row / np.linalg.norm(row))
        floats = np.stack(rows).astype(np.float32)
        return Descriptors(floats, pack_codes(np.sign(floats)))


def place_image(place: int, variant: int = 0, size: int = 48) -> np.ndarray:
    """A flat image of ``place`` (red channel), ``variant`` selecting the noise (green)."""
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = place
    image[..., 1] = variant
    return image


def textured_image(place: int, variant: int = 0, size: int = 160) -> np.ndarray:
    """A textured image of ``place`` (local features can be extracted); pixel (0, 0) names
    the place and the variant for the toy model."""
    image = np.random.default_rng(place).integers(0, 256, (size, size, 3), dtype=np.uint8)
    image[0, 0, 0], image[0, 0, 1] = place, variant
    return image
