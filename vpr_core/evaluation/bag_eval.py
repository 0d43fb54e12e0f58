"""Offline localization over a rosbag2: the stream pipeline on every frame, scored.

Every image message of the query topic (``sensor_msgs/Image`` or ``CompressedImage``, told
apart by the bag's message type) goes through one
:class:`~vpr_core.localization.recognizer.PlaceRecognizer` in bag order, none dropped, so a
run is deterministic and shows what the node publishes when it keeps up with the camera.
Ground truth comes from a pose topic or from index alignment
(:mod:`~vpr_core.evaluation.bag_truth`); scoring and output files are in
:mod:`~vpr_core.evaluation.bag_report`. A frame that cannot be decoded is recorded and
skipped, as the node does.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from vpr_core import bags
from vpr_core.config import to_dict
from vpr_core.errors import BagError, ConfigError
from vpr_core.evaluation.bag_report import score_frames
from vpr_core.evaluation.bag_truth import GroundTruth, index_truth, radius_truth
from vpr_core.localization.config import LocalizationConfig
from vpr_core.localization.recognizer import LocalizationResult, PlaceRecognizer
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.manifest import creation_info
from vpr_core.mapdb.pose import interpolate_poses, Pose

logger = logging.getLogger(__name__)

DEFAULT_RECALL_VALUES = (1, 5, 10)


@dataclass(frozen=True)
class BagEvalOptions:
    """What to evaluate: exactly one of ``gt_topic`` (positives within ``radius_m``) and
    ``index_tolerance`` (frame k shows map row k); ``odom_topic`` feeds the recognizer's
    odometry input (travel per window step, odometry gate), never the ground truth."""

    image_topic: str
    gt_topic: str | None = None
    radius_m: float = 25.0
    index_tolerance: int | None = None
    gt_tolerance_s: float = 0.5
    odom_topic: str | None = None
    same_frame: bool = False
    recall_values: tuple[int, ...] = DEFAULT_RECALL_VALUES
    progress: bool = True


@dataclass(frozen=True)
class FrameRecord:
    """One bag frame: its message ``index``, ``stamp_ns``, what the recognizer gave (None when
    the image could not be decoded, then ``error`` says why) and the stage times [s]."""

    index: int
    stamp_ns: int
    result: LocalizationResult | None
    decode_s: float
    extract_s: float
    localize_s: float
    error: str = ''


@dataclass
class BagEvaluation:
    """The report (plain dict, JSON-ready apart from per-query lists), every frame's record
    and the ground truth."""

    report: dict
    records: list[FrameRecord]
    truth: GroundTruth


def evaluate_bag(bag: str | Path, map_db: MapDatabase, extractor,
                 options: BagEvalOptions,
                 config: LocalizationConfig = LocalizationConfig()) -> BagEvaluation:
    """Run the recognizer over every frame of ``options.image_topic`` and score it.

    ``extractor``: the map's model (``extract``, ``fingerprint``, ...), checked against the
    map. Raises BagError for a missing topic (the message lists the bag's topics).
    """
    tic = time.perf_counter()
    bag = Path(bag)
    stamps = bags.read_image_stamps(bag, options.image_topic)
    if not len(stamps):
        raise BagError(f"topic '{options.image_topic}' in {bag} holds no message")
    truth = ground_truth(bag, stamps, map_db, options, config)
    odometry = odometry_at(bag, options.odom_topic, stamps, options.gt_tolerance_s)
    recognizer = PlaceRecognizer(map_db, extractor, config)
    records = localize_frames(bag, options.image_topic, stamps, recognizer, odometry,
                              options.progress)
    recall_values = usable_recall_values(options.recall_values, config.top_k)
    report = score_frames(records, truth, recall_values)
    index = map_db.index(config.search)
    report.update(mode=index.mode, index_kind=index.kind,
                  descriptor_dim=int(map_db.manifest.descriptor_dim),
                  code_bits=int(map_db.manifest.code_bits),
                  dataset=_dataset_info(bag, options, stamps, records, truth, map_db),
                  map=_map_info(map_db), model=report_model(extractor),
                  config=to_dict(config), versions=creation_info('vpr bag-eval'),
                  created=time.strftime('%Y-%m-%dT%H:%M:%S%z'),
                  seconds_total=time.perf_counter() - tic)
    return BagEvaluation(report, records, truth)


def ground_truth(bag: Path, stamps_ns: np.ndarray, map_db: MapDatabase,
                 options: BagEvalOptions, config: LocalizationConfig) -> GroundTruth:
    """The ground truth chosen by ``options`` (exactly one source)."""
    if (options.gt_topic is None) == (options.index_tolerance is None):
        raise ConfigError('give exactly one ground truth: --gt-topic (with --radius) or '
                          '--index-tolerance')
    extrinsic = Pose.from_sequence(config.prior.camera_in_base)
    if options.gt_topic is not None:
        return radius_truth(bag, options.gt_topic, stamps_ns, map_db, options.radius_m,
                            options.gt_tolerance_s, extrinsic, options.same_frame)
    return index_truth(len(stamps_ns), map_db, int(options.index_tolerance), extrinsic)


def odometry_at(bag: Path, topic: str | None, stamps_ns: np.ndarray,
                tolerance_s: float) -> list[Pose | None]:
    """Base pose of ``topic`` interpolated at every stamp (None without a topic or sample)."""
    if topic is None:
        return [None] * len(stamps_ns)
    track = bags.read_pose_track(bag, topic)
    positions, orientations, valid = interpolate_poses(
        track.stamps_ns, track.positions, track.orientations, stamps_ns, tolerance_s)
    return [Pose(tuple(float(v) for v in p), tuple(float(v) for v in q)) if ok else None
            for p, q, ok in zip(positions, orientations, valid)]


def localize_frames(bag: Path, topic: str, stamps_ns: np.ndarray, recognizer: PlaceRecognizer,
                    odometry: Sequence[Pose | None], progress: bool = True
                    ) -> list[FrameRecord]:
    """One record per message of ``topic``, in bag order; an undecodable frame is recorded
    with its error (and a warning) and the stream goes on with the next message."""
    records: list[FrameRecord] = []
    with tqdm(total=len(stamps_ns), unit='frame', desc='bag frames', disable=not progress) as bar:
        tic = time.perf_counter()
        for frame in bags.iter_image_frames(bag, topic):
            index = frame.index
            decoded = time.perf_counter()
            if frame.error is not None:
                logger.warning('frame %d of %s: %s (skipped)', index, topic, frame.error)
                records.append(FrameRecord(index, int(stamps_ns[index]), None,
                                           decoded - tic, 0.0, 0.0, str(frame.error)))
            else:
                descriptors = recognizer.extractor.extract([frame.image])
                extracted = time.perf_counter()
                result = recognizer.process(descriptors, int(stamps_ns[index]), odometry[index])
                records.append(FrameRecord(index, int(stamps_ns[index]), result, decoded - tic,
                                           extracted - decoded, time.perf_counter() - extracted))
            bar.update(1)
            tic = time.perf_counter()
    if len(records) != len(stamps_ns):
        raise BagError(f"topic '{topic}' in {bag} gave {len(records)} images for "
                       f'{len(stamps_ns)} messages')
    return records


def usable_recall_values(values: Sequence[int], top_k: int) -> tuple[int, ...]:
    """Recall N values the recognizer's ``top_k`` candidates can answer (larger N dropped)."""
    values = sorted({int(n) for n in values})
    if not values or values[0] < 1:
        raise ConfigError(f'recall values must be >= 1, got {values}')
    kept = tuple(n for n in values if n <= top_k)
    if len(kept) < len(values):
        logger.warning('recall@N for N > top_k = %d is not measurable (the recognizer returns '
                       '%d candidates); raise localization.top_k to report %s', top_k, top_k,
                       [n for n in values if n > top_k])
    return kept or (1,)


def report_model(extractor) -> dict:
    """Name, fingerprint and device of a descriptor source, for the report."""
    config = getattr(extractor, 'model_config', None)
    return {'name': getattr(config, 'name', type(extractor).__name__),
            'fingerprint': extractor.fingerprint,
            'device': str(getattr(extractor, 'device', 'cpu'))}


def _map_info(map_db: MapDatabase) -> dict:
    manifest = map_db.manifest
    return {'path': str(map_db.path) if map_db.path else '', 'map_id': manifest.map_id,
            'places': int(map_db.size), 'frame_id': manifest.frame_id,
            'model_fingerprint': manifest.model_fingerprint,
            'keyframe_spacing_m': float(map_db.keyframe_spacing_m),
            'synthetic_poses': bool(manifest.synthetic_poses)}


def _dataset_info(bag: Path, options: BagEvalOptions, stamps_ns: np.ndarray,
                  records: list[FrameRecord], truth: GroundTruth, map_db: MapDatabase) -> dict:
    topics = bags.list_topics(bag)
    decoded = np.array([r.result is not None for r in records])
    scored = decoded & truth.known
    return {'name': f'{bag.name}{options.image_topic}', 'bag': str(bag),
            'image_topic': options.image_topic, 'image_type': topics[options.image_topic][0],
            'odom_topic': options.odom_topic or '', 'frames': int(len(stamps_ns)),
            'frames_bad_image': int((~decoded).sum()),
            'frames_without_ground_truth': int((~truth.known).sum()),
            'num_queries': int(scored.sum()), 'num_database': int(map_db.size),
            'queries_without_positive': int(sum(len(truth.positives[i]) == 0
                                                for i in np.flatnonzero(scored))),
            'duration_s': float((stamps_ns.max() - stamps_ns.min()) / 1e9),
            'ground_truth': truth.info}
