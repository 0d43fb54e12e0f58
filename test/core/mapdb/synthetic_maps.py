"""Small deterministic maps for the map database tests."""
import numpy as np

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.manifest import MapManifest
from vpr_core.mapdb.pose import quaternions_from_yaw


def clustered_descriptors(count: int, dim: int = 32, bits: int = 64, seed: int = 0,
                          noise: float = 0.3) -> tuple[Descriptors, Descriptors]:
    """Map descriptors and one noisy query per place; codes are signs of a random projection."""
    rng = np.random.default_rng(seed)
    places = rng.standard_normal((count, dim)).astype(np.float32)
    queries = places + noise * rng.standard_normal((count, dim)).astype(np.float32)
    rotation = rng.standard_normal((dim, bits))

    def describe(floats):
        floats = floats / np.linalg.norm(floats, axis=1, keepdims=True)
        return Descriptors(floats.astype(np.float32), pack_codes(floats @ rotation))

    return describe(places), describe(queries)


def make_map(descriptors: Descriptors, fingerprint: str = 'model-a',
             float_dtype: str = 'float32') -> MapDatabase:
    """A map along a straight line, 2 m apart, 1 s apart."""
    count = len(descriptors)
    positions = np.zeros((count, 3))
    positions[:, 0] = 2.0 * np.arange(count)
    manifest = MapManifest(
        model_fingerprint=fingerprint,
        descriptor_dim=0 if descriptors.floats is None else descriptors.floats.shape[1],
        code_bits=0 if descriptors.codes is None else descriptors.codes.shape[1] * 8,
        num_places=count, float_dtype=float_dtype if descriptors.floats is not None
        else 'none')
    return MapDatabase(manifest, descriptors, positions, quaternions_from_yaw(np.zeros(count)),
                       np.arange(count, dtype=np.int64) * 1_000_000_000)
