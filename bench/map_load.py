"""Loading a large map again is cheap: no re-hash of unchanged files, no IVF rebuild.

Claims (issue 18), on a synthetic map (default 1 M places, float16 2048-d floats, 512-bit
codes: SelaVPR++'s sizes) saved to a temporary folder: (1) a load of an unchanged map, whose
files this machine has hashed before, is at least 2x faster than a load that hashes every
file (``verify='full'``); (2) the IVF index stored in the map folder by the first load is
loaded at least 5x faster than it is built, with identical search results; (3) a load as the
node does it (unchanged files vouched for, the stored IVF index) takes at most 3x the time of
only reading the map's files. Times are the best of ``--repeats`` runs; the page cache is warm
for both sides of each ratio. Needs about 3x the floats in memory (12 GB at the default).

    .venv/bin/python bench/map_load.py                  # 1 M places, 2048-d, 512 bits
    .venv/bin/python bench/map_load.py --places 200000 --dim 256 --bits 256
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import tempfile
import time

import numpy as np
from localization_cost import query_stream, synthetic_map

from vpr_core.descriptors import Descriptors
from vpr_core.mapdb import storage
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.index import PlaceIndex, SearchConfig

VERIFY_TARGET = 2.0
INDEX_TARGET = 5.0
READ_TARGET = 3.0
IVF = SearchConfig(mode='binary', index='ivf', top_k=10)


def best_of(repeats: int, run) -> tuple[float, object]:
    """Fastest wall time of ``run()`` over ``repeats`` calls, and its last result."""
    best, result = float('inf'), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def read_files(path: Path) -> int:
    """Read every file of the map folder into memory of its own (what any load must at least
    do: the bytes end up in fresh pages, as a map's arrays do)."""
    total = 0
    for file in sorted(path.rglob('*')):
        if file.is_file():
            data = np.empty(file.stat().st_size, dtype=np.uint8)
            with open(file, 'rb', buffering=0) as handle:
                view, done = memoryview(data), 0
                while done < len(data) and (count := handle.readinto(view[done:])):
                    done += count
            total += done
            del data
    return total


def node_load(path: Path):
    """What the node does at configure: load the map (vouched files), get its IVF index."""
    database = MapDatabase.load(path)
    return database.index(IVF)


def ivf_build_and_load(path: Path, queries: Descriptors, repeats: int
                       ) -> tuple[float, float, bool]:
    """(seconds to build the IVF index, seconds to load the stored one, equal results)."""
    database = MapDatabase.load(path, verify=False)
    build_s, built = best_of(repeats, lambda: PlaceIndex(
        database.floats, database.codes, database.manifest.code_bits, IVF))
    assert not database.index(IVF).loaded          # the first load builds and stores it
    load_s, index = float('inf'), None
    for _ in range(repeats):
        fresh = MapDatabase.load(path, verify=False)
        seconds, index = best_of(1, lambda: fresh.index(IVF))
        load_s = min(load_s, seconds)
    assert index.loaded
    same = np.array_equal(index.search(queries).indices, built.search(queries).indices)
    return build_s, load_s, same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--places', type=int, default=1_000_000)
    parser.add_argument('--dim', type=int, default=2048, help='float descriptor dimension')
    parser.add_argument('--bits', type=int, default=512, help='code bits')
    parser.add_argument('--repeats', type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='vpr-map-load-') as tmp:
        os.environ['VPR_CACHE'] = str(Path(tmp) / 'cache')
        path = Path(tmp) / 'map'
        database = synthetic_map(args.places, dim=args.dim, bits=args.bits)
        stream = query_stream(database, 100)
        queries = Descriptors(np.concatenate([d.floats for d, _, _ in stream]),
                              np.concatenate([d.codes for d, _, _ in stream]))
        database.save(path)
        del database
        time.sleep(storage.RACY_MARGIN_S + 0.5)     # older than a hash that could vouch
        MapDatabase.load(path)                      # hashes once, records the files
        full_s, _ = best_of(args.repeats, lambda: MapDatabase.load(path, verify='full'))
        cached_s, _ = best_of(args.repeats, lambda: MapDatabase.load(path))
        mmap_s, _ = best_of(args.repeats, lambda: MapDatabase.load(path, mmap=True))
        build_s, load_s, same = ivf_build_and_load(path, queries, args.repeats)
        read_s, _ = best_of(args.repeats, lambda: read_files(path))
        node_s, index = best_of(args.repeats, lambda: node_load(path))
        assert index.loaded
        size_mb = sum(f.stat().st_size for f in path.rglob('*') if f.is_file()) / 1e6
    verify_ratio, index_ratio, read_ratio = full_s / cached_s, build_s / load_s, node_s / read_s
    print(f'map of {args.places} places ({args.dim}-d float16, {args.bits}-bit codes), '
          f'{size_mb:.0f} MB on disk')
    print(f'{"step":<40} {"seconds":>8}')
    for name, seconds in (('load, sha256 of every file', full_s),
                          ('load, unchanged files vouched for', cached_s),
                          ('  the same with mmap=True', mmap_s),
                          ('IVF index built', build_s),
                          ('IVF index loaded from the map folder', load_s),
                          ("reading the map's files", read_s),
                          ('load as the node does (map + stored IVF)', node_s)):
        print(f'{name:<40} {seconds:>8.3f}')
    print(f'load speed-up {verify_ratio:.1f}x (target >= {VERIFY_TARGET}x); IVF speed-up '
          f'{index_ratio:.1f}x (target >= {INDEX_TARGET}x); identical hits: {same}')
    print(f"node's load / reading the files {read_ratio:.2f}x (target <= {READ_TARGET}x)")
    failed = verify_ratio < VERIFY_TARGET or index_ratio < INDEX_TARGET or not same or \
        read_ratio > READ_TARGET
    if failed:
        print('CLAIM FAILED: loading an unchanged map again is not cheap')
    return int(failed)


if __name__ == '__main__':
    raise SystemExit(main())
