"""The sequence figures of ``vpr evaluate``, produced by the node's own localizer.

The queries go, one frame at a time and in order, through the
:class:`~vpr_core.localization.recognizer.PlaceRecognizer` that the ROS node and
``vpr bag-eval`` run, with the same :class:`~vpr_core.localization.config.LocalizationConfig`
defaults, against a map made of the database descriptors. The figures are scored by the code
that scores ``vpr bag-eval`` (:func:`~vpr_core.evaluation.bag_report.score_frames`), so
``vpr evaluate --sequence-length 10`` reports what the node publishes on the same frames:

- ``sequence_recall_at``: a positive among the recognizer's first N candidates (ranked by
  sequence score), accepted or not, for N up to the localizer's ``top_k``;
- ``accepted``: the gate's decisions (precision, recall, count), i.e. the pose priors the node
  would publish.

The map places lie 1 m apart along x in database order (the convention of ``vpr build-map``
for unposed image folders); the queries are 1 s apart unless their bag gives stamps.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from tqdm import tqdm

from vpr_core import bags
from vpr_core.config import to_dict
from vpr_core.descriptors import Descriptors
from vpr_core.errors import ConfigError
from vpr_core.evaluation.bag_eval import FrameRecord, usable_recall_values
from vpr_core.evaluation.bag_report import score_frames
from vpr_core.evaluation.bag_truth import GroundTruth
from vpr_core.evaluation.datasets import BagFrame, EvalSet
from vpr_core.evaluation.search import evaluation_mode
from vpr_core.localization.config import LocalizationConfig
from vpr_core.localization.recognizer import PlaceRecognizer
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.manifest import MapManifest
from vpr_core.mapdb.pose import quaternions_from_yaw

# vpr evaluate's mode -> what the node's map holds and how it is searched
_MAP_CONTENT = {'float': ('float', True, False), 'binary': ('binary', False, True),
                'rerank': ('rerank', True, True)}
FRAME_PERIOD_NS = 1_000_000_000


def descriptor_map(database: Descriptors, mode: str, fingerprint: str = 'evaluation'
                   ) -> MapDatabase:
    """An in-memory map of ``database`` holding what ``mode`` searches (float: floats only,
    binary: codes only, rerank: both), places 1 m apart along x, 1 s apart."""
    _, floats, codes = _MAP_CONTENT[evaluation_mode(mode)]
    kept = Descriptors(database.floats if floats else None, database.codes if codes else None)
    if (floats and kept.floats is None) or (codes and kept.codes is None):
        raise ConfigError(f'mode {mode!r} needs descriptors this model does not produce')
    count = len(database)
    positions = np.zeros((count, 3))
    positions[:, 0] = np.arange(count, dtype=np.float64)
    manifest = MapManifest(
        model_fingerprint=fingerprint,
        descriptor_dim=0 if kept.floats is None else int(kept.floats.shape[1]),
        code_bits=0 if kept.codes is None else int(kept.codes.shape[1] * 8),
        num_places=count, float_dtype='float32' if kept.floats is not None else 'none',
        synthetic_poses=True, orientation_source='none')
    return MapDatabase(manifest, kept, positions, quaternions_from_yaw(np.zeros(count)),
                       np.arange(count, dtype=np.int64) * FRAME_PERIOD_NS)


def stream_config(config: LocalizationConfig, mode: str, sequence_length: int,
                  rerank_k: int) -> LocalizationConfig:
    """``config`` with the window length and the search of ``mode``; nothing else changes
    (``top_k`` also sets how many candidates the recognizer scores, so it stays the node's)."""
    search = dataclasses.replace(config.search, mode=_MAP_CONTENT[evaluation_mode(mode)][0],
                                 rerank_k=rerank_k)
    sequence = dataclasses.replace(config.sequence, length=int(sequence_length))
    return dataclasses.replace(config, search=search, sequence=sequence)


def query_stamps(evalset: EvalSet) -> np.ndarray:
    """[Q] int64 ns: the bag stamps of bag queries, else 1 s apart."""
    stamps = np.arange(len(evalset.queries), dtype=np.int64) * FRAME_PERIOD_NS
    by_bag: dict[tuple, np.ndarray] = {}
    for position, frame in enumerate(evalset.queries):
        if isinstance(frame, BagFrame):
            key = (frame.bag, frame.topic)
            if key not in by_bag:
                by_bag[key] = bags.read_image_stamps(frame.bag, frame.topic)
            stamps[position] = by_bag[key][frame.index]
    return stamps


def evalset_truth(evalset: EvalSet, map_db: MapDatabase) -> GroundTruth:
    """The evaluation set's positives as a :class:`GroundTruth`; a query's position is that of
    its middle positive (NaN without one)."""
    count = len(evalset.queries)
    places = np.array([int(p[len(p) // 2]) if len(p) else -1 for p in evalset.positives],
                      dtype=np.int64)
    positions = np.full((count, 3), np.nan)
    positions[places >= 0] = map_db.positions[places[places >= 0]]
    return GroundTruth(np.ones(count, dtype=bool), tuple(evalset.positives), positions,
                       np.full((count, 4), np.nan), places, False, {'kind': 'evaluation set'})


def stream_section(database: Descriptors, queries: Descriptors, evalset: EvalSet, *,
                   mode: str, sequence_length: int, recall_values: Sequence[int],
                   rerank_k: int, config: LocalizationConfig = LocalizationConfig(),
                   progress: bool = True) -> dict:
    """Report section of the queries localized as a stream (keys in the module docstring)."""
    if not evalset.sequential:
        raise ConfigError('sequence figures need queries and database ordered along a route '
                          '(index-aligned folders or bags)')
    config = stream_config(config, mode, sequence_length, rerank_k)
    map_db = descriptor_map(database, mode)
    recognizer = PlaceRecognizer(map_db, None, config)
    stamps = query_stamps(evalset)
    records = []
    for i in tqdm(range(len(queries)), desc='stream localization', unit='frame',
                  disable=not progress):
        result = recognizer.process(queries[i:i + 1], int(stamps[i]))
        records.append(FrameRecord(i, int(stamps[i]), result, 0.0, 0.0, 0.0))
    scored = score_frames(records, evalset_truth(evalset, map_db),
                          usable_recall_values(recall_values, config.top_k))
    return {'sequence_length': int(sequence_length),
            'hubness_k': int(config.sequence.hubness_k),
            'sequence_recall_at': scored['recall_at'], 'sequence_pr': scored['pr_score'],
            'sequence_matches': scored['matches'],
            'sequence_match_correct': scored['match_correct'],
            'accepted': scored['accepted'], 'localization': to_dict(config)}
