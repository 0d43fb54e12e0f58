"""How deep the float re-rank must go for hashing + re-rank to keep the float top-1.

Claim: with the automatic depth (``SearchConfig.rerank_k`` 0 -> ``rerank_depth(bits, N)``),
binary search + float re-rank keeps at least 96% of the correct float top-1s on the real maps
(R@1 within about one point of float search) and returns the float brute-force top-1 for at
least 88% of the queries at every map size up to 1 M places, with the bundled model's
256-bit codes: agreement stays level as the map grows (measured 0.89-0.94), where a fixed
depth of 200 falls from 0.93 at 1,776 places to under 0.2 at 1 M. The bundled model's codes
follow its float descriptor loosely (a float top-1 sits at Hamming rank 12 in the median but
beyond 1,700 for 1% of the queries of a 5,342-place map), so no small fixed depth can hold.

Descriptors are real: the bundled model on Nordland (``../shared/data/nordland_64x32``), the
winter test part (index >= 1800) as queries. Maps:

- ``real-1776``: the summer test part; ``real-5342``: every summer frame plus the winter
  train part (real places, real descriptors);
- ``blend-N`` (10k, 100k, 1M): those 5342 real descriptors plus made-up places, each a blend
  of a real place i with a random other real place j (weight a ~ U(0, 0.5) on j): float =
  normalise((1 - a) x_i + a x_j), code = i's bits with each bit that differs from j's taken
  from j with probability a. They look like real places, not noise, so the float top-1 faces
  realistic competition as the map grows.

For each query the float top-1 place is found by brute force, then its rank in the Hamming
order (every place at a Hamming distance <= its own counts: pessimistic about ties). 64- and
128-bit rows use every 4th / 2nd bit of the 256-bit code. The last rows run the product's
``PlaceIndex`` (rerank, automatic depth, and the depth that holds 99% of the float top-1s)
against its float mode over the same 1 M map; issue 18 asks for >= 25x the speed of float brute
force with float top-1 agreement >= 0.99 (printed ``CLAIM FAILED`` when no depth does both,
with the bytes the needed depth must gather against those float brute force streams). The
same check then runs at SelaVPR++'s sizes (>= 60x asked, 2048-d floats and 512-bit codes) on
the only real descriptors of those sizes here: patch-normalised 64x32 pixels with 512-bit
SimHash codes, blended to 1 M the same way (100 queries).

    .venv/bin/python bench/rerank_depth.py            # real maps, 10k, 100k, 1M (minutes)
    .venv/bin/python bench/rerank_depth.py --quick    # real maps and 10k
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
import time

import numpy as np

from vpr_core.descriptors import Descriptors
from vpr_core.devices import apply_thread_policy
from vpr_core.image import load_image_file
from vpr_core.mapdb.index import PlaceIndex, rerank_depth, SearchConfig

NORDLAND = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'nordland_64x32'
AGREE = 0.88
KEPT = 0.96
# issue 18: vs faiss float brute force at 1 M: the bundled model's sizes (256-d, 256 bits)
# and SelaVPR++'s (2048-d, 512 bits; here the pixel descriptor with 512-bit SimHash codes)
SPEEDUP_TARGET = {256: 25.0, 512: 60.0}
AGREE_TARGET = 0.99
PIXEL_QUERIES = 100     # 2048-d at 1 M: each pass over the map costs minutes
FLOAT_TIMED = 10        # single float brute-force queries timed (one 2048-d scan of 1 M ~ 1 s)
CHUNK = 65536


def real_descriptors(extractor=None) -> tuple[Descriptors, Descriptors, Descriptors,
                                              np.ndarray]:
    """(summer test part, summer + winter train part, winter test queries, the pool's
    Nordland index per row) of ``extractor`` (default: the bundled model)."""
    from vpr_core.extractor import Extractor
    with open(NORDLAND / 'pairs.csv', newline='') as handle:
        rows = [r for r in csv.DictReader(handle) if r['is_blank'] == '0']
    if extractor is None:
        extractor = Extractor.from_weights(None, device='cpu', batch_size=32)
    summer = extractor.extract([load_image_file(NORDLAND / r['summer_file']) for r in rows])
    winter = extractor.extract([load_image_file(NORDLAND / r['winter_file']) for r in rows])
    test = np.array([int(r['index']) >= 1800 for r in rows])
    pool = Descriptors(np.concatenate([summer.floats, winter.floats[~test]]),
                       np.concatenate([summer.codes, winter.codes[~test]]))
    index = np.array([int(r['index']) for r in rows])
    places = np.concatenate([index, index[~test]])
    return summer[np.flatnonzero(test)], pool, winter[np.flatnonzero(test)], places


def blended(pool: Descriptors, count: int, seed: int) -> Descriptors:
    """``count`` made-up places, each a blend of two real ones (module docstring)."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(pool), count)
    second = rng.integers(0, len(pool), count)
    weight = rng.uniform(0.0, 0.5, (count, 1)).astype(np.float32)
    floats = (1 - weight) * pool.floats[first] + weight * pool.floats[second]
    floats /= np.linalg.norm(floats, axis=1, keepdims=True)
    bits_a = np.unpackbits(pool.codes[first], axis=1)
    bits_b = np.unpackbits(pool.codes[second], axis=1)
    take = rng.random(bits_a.shape, dtype=np.float32) < weight
    codes = np.packbits(np.where(take, bits_b, bits_a), axis=1)
    return Descriptors(floats.astype(np.float32), codes)


def chunks(pool: Descriptors, size: int):
    """The map of ``size`` places in chunks: the real pool first, then blends."""
    yield pool[:min(size, len(pool))]
    for start in range(len(pool), size, CHUNK):
        yield blended(pool, min(CHUNK, size - start), seed=start)


def subset_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    full = np.unpackbits(codes, axis=1)
    return np.packbits(full[:, ::full.shape[1] // bits], axis=1)


def float_top1_ranks(make_chunks, queries: Descriptors, bits_list) -> tuple[dict, np.ndarray]:
    """({bits: Hamming rank (pessimistic ties) of every query's float top-1}, top-1 rows)."""
    best, best_h = np.full(len(queries), -np.inf), {b: None for b in bits_list}
    best_id, offset = np.zeros(len(queries), np.int64), 0
    histograms = {b: np.zeros((len(queries), b + 1), np.int64) for b in bits_list}
    query_codes = {b: np.unpackbits(subset_bits(queries.codes, b), axis=1).astype(np.float32)
                   for b in bits_list}
    for chunk in make_chunks():
        scores = queries.floats @ chunk.floats.T
        top = scores.argmax(axis=1)
        better = scores[np.arange(len(queries)), top] > best
        best = np.where(better, scores[np.arange(len(queries)), top], best)
        best_id = np.where(better, top + offset, best_id)
        offset += len(chunk)
        for bits in bits_list:
            h = hamming(query_codes[bits], subset_bits(chunk.codes, bits))
            for row in range(len(queries)):
                histograms[bits][row] += np.bincount(h[row], minlength=bits + 1)
            own = h[np.arange(len(queries)), top]
            best_h[bits] = own if best_h[bits] is None else np.where(better, own,
                                                                     best_h[bits])
    ranks = {bits: np.array([histograms[bits][q, :best_h[bits][q] + 1].sum()
                             for q in range(len(queries))]) for bits in bits_list}
    return ranks, best_id


def hamming(query_bits: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """[Q, b] {0,1} float x [N, b/8] packed -> [Q, N] Hamming distances (one matmul)."""
    bits = np.unpackbits(codes, axis=1).astype(np.float32)
    ones = query_bits.sum(axis=1, keepdims=True) + bits.sum(axis=1)[None, :]
    return np.rint(ones - 2 * query_bits @ bits.T).astype(np.int64)


def report(name: str, size: int, found: tuple[dict, np.ndarray],
           correct=None) -> list[bool]:
    """One row per code length; ``correct(top1 rows)`` -> bool per query on real maps."""
    ranks, top = found
    ok = []
    hit = None if correct is None else correct(top)
    for bits, rank in sorted(ranks.items()):
        auto = rerank_depth(bits, size)
        row = {depth: np.mean(rank <= depth) for depth in (100, 200, auto)}
        kept = np.mean(rank[hit] <= auto) if hit is not None else float('nan')
        print(f'{name:<12}{size:>9}{bits:>6}{np.median(rank):>8.0f}'
              f'{np.quantile(rank, 0.99):>9.0f}{rank.max():>9}{row[100]:>9.3f}{row[200]:>9.3f}'
              f'{auto:>8}{row[auto]:>9.3f}{kept:>9.3f}', flush=True)
        if bits == 256:
            ok.append(row[auto] >= AGREE and (hit is None or kept >= KEPT))
    return ok


def product_check(pool: Descriptors, queries: Descriptors, size: int,
                  ranks: np.ndarray) -> tuple[bool, bool]:
    """PlaceIndex rerank (float16 floats) against its float mode (faiss brute force) at
    ``size`` places: the automatic depth, and the depth at which 99% of the queries' float
    top-1s are among the candidates (``ranks``: their Hamming ranks, pessimistic ties).
    Returns (automatic depth agrees >= AGREE, issue 18's target: >= SPEEDUP_TARGET x faster
    than float brute force with agreement >= AGREE_TARGET). The float top-1s come from one
    batch search; float brute force is timed on FLOAT_TIMED single queries."""
    bits = pool.codes.shape[1] * 8
    floats = np.empty((size, pool.floats.shape[1]), np.float16)
    codes = np.empty((size, pool.codes.shape[1]), np.uint8)
    start = 0
    for chunk in chunks(pool, size):        # float16 as it comes: no float32 copy of the map
        floats[start:start + len(chunk)] = chunk.floats
        codes[start:start + len(chunk)] = chunk.codes
        start += len(chunk)
    exact = PlaceIndex(floats, None, 0, SearchConfig(mode='float', top_k=1))
    truth = exact.search(queries).indices[:, 0]
    depth99 = int(min(np.ceil(np.quantile(ranks, AGREE_TARGET)), size))
    indexes = {'float brute force': exact}
    auto = PlaceIndex(floats, codes, bits, SearchConfig(mode='rerank', top_k=1))
    indexes[f'rerank auto depth {auto.rerank_depth()}'] = auto
    indexes[f'rerank depth {depth99} (p99 rank)'] = PlaceIndex(
        floats, codes, bits, SearchConfig(mode='rerank', top_k=1, rerank_k=depth99))
    timed, agree = {}, {}
    for name, index in indexes.items():
        count = FLOAT_TIMED if index is exact else len(queries)
        start = time.thread_time()
        found = np.array([index.search(queries[i:i + 1]).indices[0, 0]
                          for i in range(count)])
        timed[name] = (time.thread_time() - start) * 1e3 / count
        agree[name] = float(np.mean(found == truth[:count]))
    float_ms = timed.pop('float brute force')
    agree.pop('float brute force')
    met, target = False, SPEEDUP_TARGET[bits]
    print(f'{pool.floats.shape[1]}-d floats, {bits}-bit codes:')
    for name, ms in timed.items():
        speed = float_ms / ms
        met |= speed >= target and agree[name] >= AGREE_TARGET
        print(f'PlaceIndex {name} vs float top-1 at {size}: {agree[name]:.3f} agree, '
              f'{ms:.2f} ms/query against {float_ms:.2f} ms for float brute force '
              f'({speed:.1f}x; CPU time, 1 thread)')
    # the least a re-rank of depth99 rows must read: float16 rows, against the float scan
    row_bytes, scan_bytes = floats.shape[1] * 2, size * floats.shape[1] * 4
    print(f'  a float top-1 agreement of {AGREE_TARGET} needs {depth99} candidates '
          f'({depth99 / size:.1%} of the map): {depth99 * row_bytes / 2**20:.0f} MB gathered '
          f'at random per query against {scan_bytes / 2**20:.0f} MB streamed by float brute '
          f'force, at most {scan_bytes / max(depth99 * row_bytes, 1):.1f}x less')
    return agree[f'rerank auto depth {auto.rerank_depth()}'] >= AGREE, met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='real maps and 10k only')
    parser.add_argument('--queries', type=int, default=300,
                        help='queries (evenly spaced) for the blended maps')
    args = parser.parse_args()
    apply_thread_policy(1)
    summer_test, pool, winter, places = real_descriptors()
    truth = np.sort(places[places >= 1800])       # the test part: summer rows only, ordered
    print(f"{'map':<12}{'places':>9}{'bits':>6}{'p50':>8}{'p99':>9}{'max':>9}"
          f"{'@100':>9}{'@200':>9}{'auto':>8}{'@auto':>9}{'kept':>9}")
    ok = report('real', len(summer_test),
                float_top1_ranks(lambda: [summer_test], winter, (64, 128, 256)),
                lambda top: np.abs(truth[top] - truth) <= 1)
    ok += report('real', len(pool), float_top1_ranks(lambda: [pool], winter, (64, 128, 256)),
                 lambda top: np.abs(places[top] - truth) <= 1)
    some = winter[np.linspace(0, len(winter) - 1, args.queries).astype(int)]
    sizes = (10_000,) if args.quick else (10_000, 100_000, 1_000_000)
    for size in sizes:
        ranks = float_top1_ranks(lambda: chunks(pool, size), some, (128, 256))
        ok += report('blend', size, ranks)
    auto_ok, fast_ok = product_check(pool, some, sizes[-1], ranks[0][256])
    ok.append(auto_ok)
    if not all(ok):
        print(f'CLAIM FAILED: the automatic depth kept under {KEPT:.0%} of the correct float '
              f'top-1s or agreed with the float top-1 on under {AGREE:.0%} somewhere above')
    if not fast_ok:
        print(f'CLAIM FAILED: no re-rank depth at {sizes[-1]} places is both '
              f'{SPEEDUP_TARGET[256]:.0f}x faster than float brute force and >= {AGREE_TARGET} '
              'in float top-1 agreement with 256-bit codes (issue 18)')
    pixel_rows = np.linspace(0, len(winter) - 1, PIXEL_QUERIES).astype(int)
    if not args.quick and not pixel_check(pixel_rows, sizes[-1]):
        print(f'CLAIM FAILED: no re-rank depth at {sizes[-1]} places is both '
              f'{SPEEDUP_TARGET[512]:.0f}x faster than float brute force and >= {AGREE_TARGET} '
              'in float top-1 agreement with 2048-d / 512-bit descriptors (issue 18)')
    return 0


def pixel_check(some_rows: np.ndarray, size: int) -> bool:
    """Issue 18's SelaVPR++-sized target on real 2048-d descriptors with 512-bit codes that
    follow them (patch-normalised 64x32 pixels, SimHash): the same map blend and queries."""
    from vpr_core.mapdb.pixel import PixelDescriptors
    _, pool, winter, _ = real_descriptors(PixelDescriptors(code_bits=512))
    some = winter[some_rows]
    ranks, _ = float_top1_ranks(lambda: chunks(pool, size), some, (512,))
    print(f'pixels, {size} places, 512 bits: float top-1 Hamming rank p50 '
          f'{np.median(ranks[512]):.0f}, p99 {np.quantile(ranks[512], 0.99):.0f}')
    return product_check(pool, some, size, ranks[512])[1]


if __name__ == '__main__':
    raise SystemExit(main())
