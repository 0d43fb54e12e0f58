"""The descriptor contract shared by the model, the map database and the localizer."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Hamming candidates that the float descriptor re-ranks (two-stage search), wherever a caller
# does not choose. SelaVPR++ re-ranks 100; the bundled model's 256-bit codes hold the true
# place of fewer queries in their top 100 than its float descriptor ranks first, so 100 cost
# it 2 points of R@1 on the Nordland validation split (0.784 against 0.804), and 200 none.
# Re-ranking 200 candidates is 200 dot products per query. It is the floor of the map
# search's automatic depth (vpr_core.mapdb.index.rerank_depth), which grows with the map:
# past a few thousand places a fixed 200 loses the float top-1 more and more often.
RERANK_K = 200


@dataclass(frozen=True)
class Descriptors:
    """Global descriptors of N images.

    ``floats``: [N, D] float32, L2-normalised (None for a hashing-only model).
    ``codes``: [N, bits / 8] uint8, bit = 1 where the code is +1, packed MSB-first (None
    without a hashing branch).
    """

    floats: np.ndarray | None
    codes: np.ndarray | None

    def __len__(self) -> int:
        array = self.floats if self.floats is not None else self.codes
        return 0 if array is None else int(array.shape[0])

    def __getitem__(self, index) -> 'Descriptors':
        return Descriptors(
            None if self.floats is None else self.floats[index],
            None if self.codes is None else self.codes[index])


def pack_codes(signs: np.ndarray) -> np.ndarray:
    """[N, bits] values in {-1, +1} (or bool) -> [N, bits / 8] uint8, MSB-first."""
    signs = np.asarray(signs)
    if signs.ndim != 2 or signs.shape[1] % 8:
        raise ValueError(f'codes must be [N, bits] with bits a multiple of 8, got {signs.shape}')
    return np.packbits(signs > 0, axis=1)


def unpack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """[N, bits / 8] uint8 -> [N, bits] float32 in {-1, +1}."""
    return np.unpackbits(codes, axis=1, count=bits).astype(np.float32) * 2.0 - 1.0
