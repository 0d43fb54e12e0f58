"""Map-building throughput on Ray Data with 1 and 2 describing actors against the
single-process build, on the same real frames, measured in one run.

Claims: (1) both Ray builds write the single-process map bit for bit (every array and the
map's content id); (2) on this host two actors build at least 1.2x faster than one (the
actor pool scales). Ray's fixed costs (start-up, actor start, one task per group) are part of
each Ray time except the start of the local Ray itself, which is printed apart; the ratio
against the single-process build shows what they cost on one small host. Input: the first
``--frames`` Nordland summer thumbnails (``../shared/data``), the bundled model, one thread
per worker.

    .venv/bin/python bench/ray_build.py
    .venv/bin/python bench/ray_build.py --frames 600 --batch-size 8
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import shutil
import tempfile
import time

import numpy as np

from vpr_core.devices import apply_thread_policy
from vpr_core.extractor import Extractor
from vpr_core.mapdb.builder import build_map, BuildConfig
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.ray_build import build_map_ray, RayConfig
from vpr_core.mapdb.source import ImageFolderSource

NORDLAND = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'nordland_64x32'
SCALING_TARGET = 1.2
ARRAYS = ('floats', 'codes', 'positions', 'orientations', 'stamps_ns', 'names')


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def same_map(a: MapDatabase, b: MapDatabase) -> bool:
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in ARRAYS) and \
        a.fingerprint == b.fingerprint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, default=1500, help='Nordland frames to map')
    parser.add_argument('--batch-size', type=int, default=16, help='keyframes per group')
    args = parser.parse_args()
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    os.environ.setdefault('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', '0')    # bind to 127.0.0.1
    apply_thread_policy(1)
    import ray
    files = sorted((NORDLAND / 'summer').glob('*.png'))[:args.frames]
    if not files:
        raise SystemExit(f'no Nordland frames under {NORDLAND}')
    extractor = Extractor.from_weights(None, device='cpu', batch_size=args.batch_size)
    config = BuildConfig(batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix='vpr-ray-bench-') as folder:
        images = Path(folder) / 'images'
        images.mkdir()
        for path in files:
            shutil.copy(path, images / path.name)
        source = ImageFolderSource(images)
        rows = {}
        rows['single process'] = timed(lambda: build_map(
            source, extractor, config, out=Path(folder) / 'single', progress=False))
        start_s, _ = timed(lambda: ray.init(address='local', num_cpus=2,
                                            include_dashboard=False, log_to_driver=False,
                                            _node_ip_address='127.0.0.1'))
        try:
            for workers in (1, 2):
                rows[f'ray, {workers} actor(s)'] = timed(lambda: build_map_ray(
                    source, extractor, config, ray_config=RayConfig(workers=workers),
                    out=Path(folder) / f'ray{workers}', progress=False))
        finally:
            ray.shutdown()
        equal = all(same_map(rows['single process'][1], row[1]) for row in rows.values())
        ids = {MapDatabase.load(Path(folder) / n).manifest.map_id
               for n in ('single', 'ray1', 'ray2')}
        equal = equal and len(ids) == 1
    single_s = rows['single process'][0]
    print(f'{len(files)} frames, batch {args.batch_size}, bundled model, 1 thread per worker, '
          f'{os.cpu_count()} cores; local Ray start {start_s:.1f} s (not counted below)')
    print(f'{"engine":<22} {"seconds":>8} {"img/s":>8} {"vs single":>10}')
    for name, (seconds, _) in rows.items():
        print(f'{name:<22} {seconds:>8.2f} {len(files) / seconds:>8.1f} '
              f'{single_s / seconds:>9.2f}x')
    scaling = rows['ray, 1 actor(s)'][0] / rows['ray, 2 actor(s)'][0]
    print(f'maps equal bit for bit (arrays, fingerprint, map id): {equal}')
    print(f'2 actors vs 1: {scaling:.2f}x (target >= {SCALING_TARGET}x)')
    failed = False
    if not equal:
        print('CLAIM FAILED: a Ray map differs from the single-process map')
        failed = True
    if scaling < SCALING_TARGET:
        print('CLAIM FAILED: two Ray actors are not 1.2x faster than one on this host')
        failed = True
    return 1 if failed else 0


if __name__ == '__main__':
    raise SystemExit(main())
