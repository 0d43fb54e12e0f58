"""Evaluate a model (and the pixel baseline) on an :class:`EvalSet`.

Single-frame recall@N, optional sequence figures (the model's from the node's own stream
localizer, :mod:`~vpr_core.evaluation.stream`; the pixel baseline's from offline SeqSLAM-style
matching over its distance matrix, a reference), a precision-recall curve of the top-1
matches, latency per stage and descriptor bytes per image. Results are plain dicts, ready for
JSON.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from vpr_core.descriptors import Descriptors, RERANK_K
from vpr_core.evaluation import baseline
from vpr_core.bags import iter_images
from vpr_core.evaluation.datasets import BagFrame, EvalSet, Frame
from vpr_core.evaluation.metrics import (DEFAULT_RECALL_VALUES, percentiles_ms,
                                         precision_recall, recall_at, top1_correct)
from vpr_core.evaluation.search import evaluation_mode, Mode, rank
from vpr_core.image import load_image_file
from vpr_core.evaluation.stream import stream_section
from vpr_core.localization.config import LocalizationConfig
from vpr_core.localization.hubness import reduce_hubness
from vpr_core.localization.sequence import sequence_score_matrix

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate. ``sequence_length`` None: single-frame only; else the queries are
    also localized as a stream over windows of that length with ``localization`` (the node's
    settings; its sequence length is replaced)."""

    mode: Mode = 'float'
    rerank_k: int = RERANK_K
    recall_values: tuple[int, ...] = DEFAULT_RECALL_VALUES
    sequence_length: int | None = None
    localization: LocalizationConfig = LocalizationConfig()
    batch_size: int = 16
    progress: bool = True


@dataclass
class LoadedImages:
    """Decoded RGB images of an :class:`EvalSet` and the per-image decode times [s]."""

    database: list[np.ndarray]
    queries: list[np.ndarray]
    seconds: list[float]


def load_images(evalset: EvalSet, progress: bool = True) -> LoadedImages:
    """Decode every database and query image once (both model and baseline use them)."""
    seconds: list[float] = []

    def read(frames: Sequence[Frame], desc: str) -> list[np.ndarray]:
        images: list[np.ndarray | None] = [None] * len(frames)
        with tqdm(total=len(frames), desc=desc, unit='img', disable=not progress) as bar:
            for position, image, duration in _decode(frames):
                images[position] = image
                seconds.append(duration)
                bar.update(1)
        return images

    return LoadedImages(read(evalset.database, 'database images'),
                        read(evalset.queries, 'query images'), seconds)


def _decode(frames: Sequence[Frame]) -> Iterator[tuple[int, np.ndarray, float]]:
    """(position, RGB image, seconds) of every frame; one pass per bag."""
    by_bag: dict[tuple, dict[int, int]] = {}
    for position, frame in enumerate(frames):
        if isinstance(frame, BagFrame):
            by_bag.setdefault((frame.bag, frame.topic), {})[frame.index] = position
            continue
        start = time.perf_counter()
        image = load_image_file(frame)
        yield position, image, time.perf_counter() - start
    for (bag, topic), positions in by_bag.items():
        start = time.perf_counter()
        for index, image in iter_images(bag, topic, sorted(positions)):
            yield positions[index], image, time.perf_counter() - start
            start = time.perf_counter()


def extract_timed(extractor, images: Sequence[np.ndarray], batch_size: int, desc: str,
                  progress: bool = True) -> tuple[Descriptors, list[float]]:
    """Descriptors of ``images`` in batches, with the per-image time of every batch [s]."""
    parts, seconds = [], []
    with tqdm(total=len(images), desc=desc, unit='img', disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            tic = time.perf_counter()
            parts.append(extractor.extract(batch))
            seconds.append((time.perf_counter() - tic) / len(batch))
            bar.update(len(batch))
    floats = [p.floats for p in parts]
    codes = [p.codes for p in parts]
    return Descriptors(np.concatenate(floats) if floats[0] is not None else None,
                       np.concatenate(codes) if codes[0] is not None else None), seconds


def evaluate_model(extractor, evalset: EvalSet, options: EvalOptions,
                   images: LoadedImages) -> dict:
    """Report section of a model: recalls, PR curve, latency per stage, bytes per image."""
    db, db_seconds = extract_timed(extractor, images.database, options.batch_size,
                                   'database descriptors', options.progress)
    queries, q_seconds = extract_timed(extractor, images.queries, options.batch_size,
                                       'query descriptors', options.progress)
    section = score_descriptors(db, queries, evalset, options)
    section['latency_ms']['decode'] = percentiles_ms(images.seconds)
    section['latency_ms']['extract'] = percentiles_ms(db_seconds + q_seconds)
    section['descriptor_bytes_per_image'] = _bytes_per_image(db, options.mode)
    section['descriptor_dim'] = 0 if db.floats is None else int(db.floats.shape[1])
    section['code_bits'] = 0 if db.codes is None else int(db.codes.shape[1] * 8)
    return section


def score_descriptors(db: Descriptors, queries: Descriptors, evalset: EvalSet,
                      options: EvalOptions) -> dict:
    """Recalls, PR curve and search latency of given descriptors (no extraction)."""
    depth = max(options.recall_values)
    mode = evaluation_mode(options.mode)
    ranking = rank(db, queries, mode, depth, options.rerank_k)
    section = {'mode': mode, 'rerank_k': options.rerank_k if mode == 'rerank'
               else None,
               'latency_ms': {k: percentiles_ms(v) for k, v in ranking.seconds.items()}}
    section.update(_scored(ranking.indices, ranking.distances[:, 0], evalset, options))
    if options.sequence_length:
        tic = time.perf_counter()
        section.update(stream_section(
            db, queries, evalset, mode=mode, sequence_length=options.sequence_length,
            recall_values=options.recall_values, rerank_k=options.rerank_k,
            config=options.localization, progress=options.progress))
        section['latency_ms']['sequence'] = percentiles_ms(
            [(time.perf_counter() - tic) / max(len(evalset.queries), 1)])
    return section


def evaluate_baseline(evalset: EvalSet, options: EvalOptions, images: LoadedImages) -> dict:
    """Report section of the patch-normalised pixel baseline (same recalls and PR)."""
    tic = time.perf_counter()
    db = baseline.describe_pixels(images.database)
    queries = baseline.describe_pixels(images.queries)
    describe_s = (time.perf_counter() - tic) / max(len(db) + len(queries), 1)
    tic = time.perf_counter()
    matrix = baseline.pixel_distances(queries, db)
    depth = min(max(options.recall_values), matrix.shape[1])
    order = np.argsort(matrix, axis=1, kind='stable')[:, :depth]
    search_s = (time.perf_counter() - tic) / max(len(queries), 1)
    section = {'name': 'patch-normalised grey pixels 64x32, patch 8, mean absolute difference',
               'descriptor_bytes_per_image': int(db.shape[1] * 4),
               'latency_ms': {'extract': percentiles_ms([describe_s]),
                              'search': percentiles_ms([search_s])}}
    section.update(_scored(order, np.take_along_axis(matrix, order[:, :1], 1)[:, 0], evalset,
                           options))
    if options.sequence_length:
        section.update(_sequence_section(matrix, evalset, options))
    return section


def _scored(indices: np.ndarray, best_distance: np.ndarray, evalset: EvalSet,
            options: EvalOptions) -> dict:
    correct = top1_correct(indices, evalset.positives)
    pr = precision_recall(-np.asarray(best_distance, np.float64), correct, evalset.has_positive)
    return {'recall_at': _keyed(recall_at(indices, evalset.positives, options.recall_values)),
            'pr': pr.as_dict(), 'matches': indices[:, 0].tolist(),
            'match_correct': correct.tolist()}


def _sequence_section(matrix: np.ndarray, evalset: EvalSet, options: EvalOptions) -> dict:
    """The pixel baseline's sequence figures: offline matching over its whole distance matrix
    with the window, contrast and hubness settings of ``options.localization``."""
    if not evalset.sequential:
        logger.warning('sequence filtering on a set that is not ordered along a route')
    sequence = options.localization.sequence
    if sequence.hubness_k:
        matrix = reduce_hubness(matrix, sequence.hubness_k)
    scores = sequence_score_matrix(matrix, options.sequence_length,
                                   velocities=sequence.velocities,
                                   contrast_window=sequence.contrast_window)
    depth = min(max(options.recall_values), scores.shape[1])
    order = np.argsort(scores, axis=1, kind='stable')[:, :depth]
    best = scores[np.arange(len(scores)), order[:, 0]]
    scored = _scored(order, best, evalset, options)
    return {'sequence_length': options.sequence_length, 'hubness_k': sequence.hubness_k,
            'sequence_recall_at': scored['recall_at'], 'sequence_pr': scored['pr'],
            'sequence_matches': scored['matches'],
            'sequence_match_correct': scored['match_correct']}


def _keyed(recalls: dict[int, float]) -> dict[str, float]:
    return {str(n): value for n, value in recalls.items()}


def _bytes_per_image(descriptors: Descriptors, mode: str) -> int:
    """Bytes one image needs in the map for ``mode`` (float32 floats, packed codes)."""
    floats = descriptors.floats.shape[1] * 4 if mode in ('float', 'rerank') else 0
    codes = descriptors.codes.shape[1] if evaluation_mode(mode) in ('binary', 'rerank') else 0
    return int(floats + codes)


def evaluate(extractor, evalset: EvalSet, options: EvalOptions,
             with_baseline: bool = True) -> dict:
    """Full report of ``extractor``'s model on ``evalset``, with the pixel baseline beside it.

    Top-level keys: ``dataset``, ``model``, the model's metrics (``recall_at``, ``pr``, ...,
    see :func:`evaluate_model`) and ``baseline``.
    """
    tic = time.perf_counter()
    images = load_images(evalset, options.progress)
    report = {'dataset': {'name': evalset.name, 'num_database': len(evalset.database),
                          'num_queries': len(evalset.queries),
                          'queries_without_positive': int((~evalset.has_positive).sum())}}
    report.update(evaluate_model(extractor, evalset, options, images))
    if with_baseline:
        report['baseline'] = evaluate_baseline(evalset, options, images)
    report['seconds_total'] = time.perf_counter() - tic
    return report
