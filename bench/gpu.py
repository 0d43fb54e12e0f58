"""The GPU path, measured in one run on a CUDA machine (issue 18).

1. Extraction throughput of the SelaVPR++ ViT-B/14 two-branch model (MulConv side network,
   GeM 2048-d float head, 512-bit hashing branch; 322 x 322 input; random weights: throughput
   does not depend on them) with the torch backend, float32 (TF32 off) and fp16 autocast, at
   batch 1 and 32: images/s, achieved TFLOP/s and the fraction of the GPU's dense peak
   (``bench/gpu_flops.py``: FLOPs counted from the architecture, peaks of known GPUs).
   Inputs are already preprocessed on the GPU; descriptors are copied back to the host.
2. Binary search over 1 M random 512-bit codes, top 200 (the product's ``PlaceIndex``,
   flat binary index), faiss on the GPU against faiss on the CPU (the process thread policy):
   per query at batch 1 (the node) and batch 256. Claim: the same Hamming distances.
3. The node's per-frame pipeline (``PlaceRecognizer.process``: preprocessing, extraction,
   search, sequence filter, gate, prior) on 640 x 480 frames paced at 30 Hz for ``--frames``
   frames, ViT-B fp16 on the GPU against a synthetic 100 k-place map (search on the GPU where
   faiss has it). Claim: p95 process time <= 33.3 ms and no frame dropped (dropped, as by a
   depth-1 subscription: the next frame was due before this one's processing could start).
4. torch against TensorRT (``backend='tensorrt'``: the tensorrt package or onnxruntime's
   TensorRT provider), same model and inputs: max abs difference of the unit descriptors and
   the share of code bits that differ. Claims: fp32 engine within 1e-4 of torch float32; fp16
   engine at cosine >= 0.999 to torch float32; fp16 engine per frame no slower than torch fp16.

Without CUDA the run is pending: it says so and exits 0 without figures.

    .venv/bin/python bench/gpu.py            # two engine builds: minutes each
    .venv/bin/python bench/gpu.py --quick    # short rounds, 10 k-place node map, fp16 engine only
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import numpy as np
import torch

from gpu_flops import flops_per_image, parse_peak, peak_for
from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.devices import apply_thread_policy, faiss_gpu_available
from vpr_core.errors import ConfigError
from vpr_core.extractor import Extractor
from vpr_core.localization.recognizer import PlaceRecognizer
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.index import PlaceIndex, SearchConfig
from vpr_core.mapdb.manifest import MapManifest
from vpr_core.mapdb.pose import Pose, quaternions_from_yaw
from vpr_core.model.architecture import build_model
from vpr_core.model.factory import selavpr_plusplus_config

PERIOD_S = 1.0 / 30
FP32_TOLERANCE, FP16_COSINE = 1e-4, 0.999


def pending(reason: str) -> int:
    """No CUDA: say so, print no figure, succeed."""
    print(f'GPU run pending: {reason}. Nothing was measured; run this on a CUDA machine '
          '(docs/gpu.md).')
    return 0


def timed(call, seconds: float, minimum: int = 5) -> float:
    """Seconds per call of ``call`` (results come back to the host, so each call syncs)."""
    for _ in range(3):
        call()
    count, start = 0, time.perf_counter()
    while count < minimum or time.perf_counter() - start < seconds:
        call()
        count += 1
    return (time.perf_counter() - start) / count


def extraction(model, flops: int, peak, seconds: float) -> None:
    """Table 1: images/s and fraction of peak, fp32 / fp16 x batch 1 / 32."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    height, width = model.config.preprocess.test_size
    print(f'\n1. extraction, {model.config.name} at {height}x{width}, '
          f'{flops / 1e9:.1f} GFLOPs/image'
          f' (peak: {peak.label if peak else "unknown GPU, no fraction"})')
    print(f"{'precision':<10}{'batch':>6}{'ms/batch':>10}{'images/s':>10}{'TFLOP/s':>9}"
          f"{'of peak':>9}")
    for precision in ('fp32', 'fp16'):
        for batch in (1, 32):
            extractor = Extractor(model, device='cuda', fp16=precision == 'fp16',
                                  batch_size=batch)
            images = torch.randn(batch, 3, height, width, device='cuda')
            per_call = timed(lambda: extractor.extract_tensor(images), seconds)
            rate = batch / per_call
            achieved = rate * flops
            share = f'{achieved / peak.of(precision):>8.1%}' if peak else f"{'-':>8}"
            print(f'{precision:<10}{batch:>6}{per_call * 1e3:>10.2f}{rate:>10.1f}'
                  f'{achieved / 1e12:>9.1f} {share}')


def binary_search(size: int, seconds: float) -> list[str]:
    """Table 2: GPU against CPU faiss over ``size`` 512-bit codes; returns failures."""
    print(f'\n2. binary search, {size:,} random 512-bit codes, top 200, flat index')
    if not faiss_gpu_available():
        print('   faiss here has no GPU support (install faiss-gpu): not measured')
        return ['faiss GPU binary search not measured: this faiss has no GPU support']
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (size, 64), dtype=np.uint8)
    queries = Descriptors(None, rng.integers(0, 256, (256, 64), dtype=np.uint8))
    indexes = {device: PlaceIndex(None, codes, 512, SearchConfig(
        mode='binary', index='flat', device=device, top_k=200)) for device in ('cpu', 'cuda')}
    hits = {device: index.search(queries) for device, index in indexes.items()}
    same = np.array_equal(hits['cpu'].distances, hits['cuda'].distances)
    print(f"{'queries/call':<14}{'CPU ms/query':>14}{'GPU ms/query':>14}{'GPU speed-up':>14}")
    for batch in (1, 256):
        part = queries[:batch]
        cpu, gpu = (timed(lambda: indexes[d].search(part), seconds) / batch
                    for d in ('cpu', 'cuda'))
        print(f'{batch:<14}{cpu * 1e3:>14.3f}{gpu * 1e3:>14.3f}{cpu / gpu:>13.1f}x')
    print(f'   same Hamming distances on GPU and CPU for 256 queries: {same}')
    return [] if same else ['faiss GPU and CPU binary search disagree']


def synthetic_map(extractor: Extractor, size: int) -> MapDatabase:
    """``size`` random places 1 m apart, with the extractor's fingerprint and sizes."""
    rng = np.random.default_rng(1)
    floats = rng.standard_normal((size, extractor.descriptor_dim), dtype=np.float32)
    floats /= np.linalg.norm(floats, axis=1, keepdims=True)
    signs = rng.standard_normal((size, extractor.code_bits), dtype=np.float32)
    positions = np.zeros((size, 3))
    positions[:, 0] = np.arange(size)
    manifest = MapManifest(model_fingerprint=extractor.fingerprint,
                           descriptor_dim=extractor.descriptor_dim,
                           code_bits=extractor.code_bits, num_places=size,
                           float_dtype='float16')
    return MapDatabase(manifest, Descriptors(floats.astype(np.float16), pack_codes(signs)),
                       positions, quaternions_from_yaw(np.zeros(size)),
                       np.arange(size, dtype=np.int64) * 1_000_000_000)


def node_at_30hz(model, frames: int, map_size: int) -> list[str]:
    """Table 3: per-frame ``process`` at 30 Hz on the GPU; returns failures."""
    extractor = Extractor(model, device='cuda', fp16=True, batch_size=1)
    recognizer = PlaceRecognizer(synthetic_map(extractor, map_size), extractor)
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]

    def frame(i: int, stamp: float):     # 1.5 m/s along the map's line of places
        return recognizer.process(images[i % 8], stamp,
                                  Pose((0.05 * i, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)))
    for i in range(10):                                             # warm-up
        frame(i, i * PERIOD_S)
    recognizer.reset()
    costs, missed = [], 0
    start = time.perf_counter()
    for i in range(frames):
        due = start + i * PERIOD_S
        now = time.perf_counter()
        if now > due + PERIOD_S:        # the next frame is in: a depth-1 queue drops this one
            missed += 1
            continue
        time.sleep(max(0.0, due - now))
        begin = time.perf_counter()
        frame(i, 100.0 + i * PERIOD_S)
        costs.append(time.perf_counter() - begin)
    if not costs:
        return [f'node at 30 Hz: all {frames} frames dropped']
    ms = np.asarray(costs) * 1e3
    p50, p95 = np.percentile(ms, [50, 95])
    search = 'GPU' if faiss_gpu_available() else 'CPU'
    print(f'\n3. node pipeline at 30 Hz, 640x480, {model.config.name} fp16 on GPU, '
          f'{map_size:,}-place map '
          f'(search on {search}), {frames} frames')
    print(f'   process ms: median {p50:.2f}, p95 {p95:.2f}, max {ms.max():.2f}; '
          f'{int((ms > PERIOD_S * 1e3).sum())} over 33.3 ms; {missed} dropped (processing '
          'fell a frame behind)')
    if p95 > PERIOD_S * 1e3 or missed:
        return [f'node at 30 Hz: p95 {p95:.1f} ms, {missed} of {frames} frames dropped']
    return []


def torch_vs_tensorrt(model, quick: bool, seconds: float) -> list[str]:
    """Table 4: TensorRT engines against torch on the same inputs; returns failures."""
    print('\n4. torch against TensorRT, 32 random preprocessed images')
    images = torch.randn(32, 3, *model.config.preprocess.test_size)
    reference = Extractor(model, device='cuda', fp16=False).extract_tensor(images)
    eager16 = Extractor(model, device='cuda', fp16=True, batch_size=1)
    failures = []
    with tempfile.TemporaryDirectory() as cache:
        for fp16 in ((True,) if quick else (False, True)):
            name = 'fp16' if fp16 else 'fp32'
            try:    # its own copy: the ONNX export moves the model to the CPU
                engine = Extractor(copy.deepcopy(model).cpu(), device='cuda', fp16=fp16,
                                   backend='tensorrt', onnx_cache=cache)
            except ConfigError as error:
                print(f'   TensorRT not available: {error}')
                return [f'torch vs TensorRT not compared: {error}']
            out = engine.extract_tensor(images)
            diff = float(np.abs(out.floats - reference.floats).max())
            cosine = float((out.floats * reference.floats).sum(axis=1).min())
            bits = float(np.unpackbits(out.codes ^ reference.codes).mean())
            one = images[:1]
            ratio = timed(lambda: eager16.extract_tensor(one), seconds) / \
                timed(lambda: engine.extract_tensor(one), seconds)
            print(f'   {name} engine vs torch fp32: max abs {diff:.2e}, min cosine '
                  f'{cosine:.6f}, code bits differing {bits:.2%}; batch 1 {ratio:.2f}x '
                  'torch fp16')
            if not fp16 and diff > FP32_TOLERANCE:
                failures.append(f'fp32 engine {diff:.1e} from torch (target {FP32_TOLERANCE})')
            if fp16 and (cosine < FP16_COSINE or ratio < 1.0):
                failures.append(f'fp16 engine: cosine {cosine:.5f}, {ratio:.2f}x torch fp16')
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='short rounds, small map')
    parser.add_argument('--codes', type=int, default=1_000_000, help='codes for table 2')
    parser.add_argument('--frames', type=int, default=600, help='frames at 30 Hz')
    parser.add_argument('--map-size', type=int, default=100_000, help='places for table 3')
    parser.add_argument('--peak-tflops', help='FP32,FP16 dense peak of an unlisted GPU')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads (default: the project policy)')
    args = parser.parse_args()
    if not torch.cuda.is_available():
        return pending(f'torch {torch.__version__} sees no CUDA device')
    threads = apply_thread_policy(args.threads)
    seconds = 0.5 if args.quick else 3.0
    frames = 150 if args.quick else args.frames
    properties = torch.cuda.get_device_properties(0)
    peak = parse_peak(args.peak_tflops) if args.peak_tflops else \
        peak_for(properties.name, properties.multi_processor_count)
    print(f'{properties.name} ({properties.multi_processor_count} SMs), torch '
          f'{torch.__version__}, CUDA {torch.version.cuda}, {threads} CPU thread(s)')
    config = selavpr_plusplus_config(backbone='dinov2-base', aggregation='gem', hashing=True,
                                     rerank=True)
    torch.manual_seed(0)
    model = build_model(config).eval()
    extraction(model, flops_per_image(config), peak, seconds)
    failures = binary_search(args.codes, seconds)
    failures += node_at_30hz(model, frames, 10_000 if args.quick else args.map_size)
    failures += torch_vs_tensorrt(model, args.quick, seconds)
    for failure in failures:
        print(f'CLAIM FAILED: {failure}')
    if not failures:
        print('CLAIM: every GPU claim above held in this run')
    return 1 if failures else 0


if __name__ == '__main__':
    raise SystemExit(main())
