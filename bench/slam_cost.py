"""Per-keyframe cost of SLAM mode as the keyframe database grows, against the camera rate.

Claim (issue 17): database growth does not slow the node below the camera rate (10 Hz) on this
machine with the bundled model. Measured in one run, one thread:

- ``inference``: the bundled model's forward pass per frame (``Extractor.extract`` of one
  rtabmap_loop frame, 512x384);
- ``search + bookkeeping`` of :meth:`LoopDetector.process` at 10k and 100k keyframes: the
  database is synthetic (random unit 256-d floats and their 256-bit sign codes, the bundled
  model's sizes, loaded as a previous session so every row is searched), the queries are
  real frames' descriptors through the real model, computed beforehand so the timing holds
  the detector's own work only (search, consistency, storing the keyframe); verification off;
- ``features + verification``: ORB extraction of the keyframe and ``max_verifications``
  verifications against neighbouring rtabmap frames (independent of the database size);
- memory: the local features every keyframe keeps for verification.

The keyframe budget at 100k keyframes is inference + search/bookkeeping + features and
verification; ``CLAIM FAILED`` when it exceeds the camera period (every frame a keyframe,
the worst case: with odometry most frames are not keyframes and cost nothing).

    .venv/bin/python bench/slam_cost.py [--sizes 10000,100000] [--frames 200] [--rate 10]
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
import time

import numpy as np

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.devices import apply_thread_policy
from vpr_core.extractor import Extractor
from vpr_core.geometry import extract_features, verify
from vpr_core.image import load_image_file
from vpr_core.loops.config import LoopConfig
from vpr_core.loops.detector import LoopDetector, with_verification
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.manifest import MapManifest
from vpr_core.mapdb.pose import quaternions_from_yaw

SAMPLES = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'rtabmap_loop' / \
    'samples'


class Precomputed:
    """The real extractor's identity with descriptors looked up by image (no inference)."""

    def __init__(self, extractor: Extractor, images: list[np.ndarray]) -> None:
        self.fingerprint = extractor.fingerprint
        self.descriptor_dim = extractor.descriptor_dim
        self.code_bits = extractor.code_bits
        self.model_config = extractor.model_config
        self.backend = extractor.backend
        self._rows = {id(image): i for i, image in enumerate(images)}
        self._all = extractor.extract(images)

    def extract(self, images) -> Descriptors:
        return self._all[[self._rows[id(image)] for image in images]]


def synthetic_map(count: int, extractor: Precomputed, seed: int = 0) -> MapDatabase:
    rng = np.random.default_rng(seed)
    floats = rng.standard_normal((count, extractor.descriptor_dim), dtype=np.float32)
    floats /= np.linalg.norm(floats, axis=1, keepdims=True)
    positions = np.zeros((count, 3))
    positions[:, 0] = np.arange(count)
    manifest = MapManifest(model_fingerprint=extractor.fingerprint,
                           descriptor_dim=extractor.descriptor_dim,
                           code_bits=extractor.code_bits, num_places=count,
                           synthetic_poses=True)
    codes = pack_codes(floats[:, :extractor.code_bits])
    return MapDatabase(manifest, Descriptors(floats, codes), positions,
                       quaternions_from_yaw(np.zeros(count)),
                       np.arange(count, dtype=np.int64) * 1_000_000_000)


def median_ms(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def detector_ms(size: int, extractor: Precomputed, images: list[np.ndarray],
                frames: int) -> float:
    config = with_verification(LoopConfig(), False)
    detector = LoopDetector(extractor, config, previous=synthetic_map(size, extractor))
    times = []
    for i in range(frames):
        image = images[i % len(images)]
        started = time.perf_counter()
        detector.process(image, float(i))
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times[len(times) // 10:]))


def verification_ms(images: list[np.ndarray], config: LoopConfig) -> float:
    times = []
    for i in range(0, len(images) - 4, 4):
        started = time.perf_counter()
        query = extract_features(images[i], config.verify)
        for j in range(1, config.max_verifications + 1):
            verify(query, extract_features(images[i + j], config.verify), config.verify)
        times.append(time.perf_counter() - started)
    # the candidates' features come from the store in the node: only one extraction counts
    single = median_ms(lambda: extract_features(images[0], config.verify), 10)
    extra = config.max_verifications * single
    return float(np.median(times)) * 1e3 - extra


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='10000,100000')
    parser.add_argument('--frames', type=int, default=200)
    parser.add_argument('--rate', type=float, default=10.0, help='camera rate, Hz')
    args = parser.parse_args()
    apply_thread_policy(1)
    images = [load_image_file(SAMPLES / f'{n}.jpg') for n in range(1, 85)]
    model = Extractor.from_weights(None, device='cpu')
    inference = median_ms(lambda: model.extract([images[0]]), 50)
    extractor = Precomputed(model, images)
    features = verification_ms(images, dataclasses.replace(LoopConfig()))
    kept = [extract_features(image, LoopConfig().verify) for image in images]
    feature_kb = np.mean([f.keypoints.nbytes + f.descriptors.nbytes for f in kept]) / 1024
    sizes = [int(s) for s in args.sizes.split(',')]
    costs = {size: detector_ms(size, extractor, images, args.frames) for size in sizes}
    period = 1e3 / args.rate
    print(f'inference (bundled model, 512x384): {inference:.2f} ms per frame')
    print(f'features + {LoopConfig().max_verifications} verifications: {features:.2f} ms per '
          'keyframe')
    print(f"{'keyframes':>10} {'search+bookkeeping ms':>22} {'/ inference':>12} "
          f"{'keyframe total ms':>18}")
    for size in sizes:
        total = inference + costs[size] + features
        print(f'{size:>10} {costs[size]:>22.3f} {costs[size] / inference:>12.2f} '
              f'{total:>18.2f}')
    print(f'memory: local features {feature_kb:.1f} KiB per keyframe (held for verification), '
          f'{feature_kb * sizes[-1] / 2**20:.2f} GiB at {sizes[-1]} keyframes; descriptors '
          f'{(extractor.descriptor_dim * 4 + extractor.code_bits // 8) / 1024:.2f} KiB')
    worst = inference + costs[sizes[-1]] + features
    print(f'keyframe at {sizes[-1]} keyframes: {worst:.1f} ms against a camera period of '
          f'{period:.0f} ms ({args.rate:g} Hz); growth {sizes[0]} -> {sizes[-1]}: '
          f'{costs[sizes[-1]] / costs[sizes[0]]:.2f}x')
    if worst > period:
        print('CLAIM FAILED: at this database size a keyframe takes longer than the camera '
              'period')
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
