"""Build a map: list frames, choose keyframes, extract descriptors in batches, pose, save.

The descriptor side is any object with the :class:`DescriptorSource` shape (the model's
``Extractor`` has it), so the builder never depends on a particular model.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Protocol, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from vpr_core.config import to_dict
from vpr_core.descriptors import Descriptors
from vpr_core.errors import ConfigError, MapError, UnsupportedImageError
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.keyframe import KeyframeConfig, select_keyframes
from vpr_core.mapdb.manifest import creation_info, MapManifest
from vpr_core.mapdb.pose import compose, IDENTITY_EXTRINSIC, Pose
from vpr_core.mapdb.source import FrameSource, FrameTable

logger = logging.getLogger(__name__)

UNDECODABLE_NAMED = 5      # undecodable frames named in the log and the manifest


class DescriptorSource(Protocol):
    """What the builder needs from a model (``vpr_core.extractor.Extractor`` fits)."""

    @property
    def fingerprint(self) -> str:
        """Identity of model + weights; maps record it and refuse other models."""

    @property
    def descriptor_dim(self) -> int:
        """Float descriptor width (0: codes only)."""

    @property
    def code_bits(self) -> int:
        """Binary code bits (0: floats only)."""

    @property
    def model_config(self) -> Any:
        """The model's architecture dataclass (None when unknown)."""

    def extract(self, images: Sequence[np.ndarray]) -> Descriptors:
        """N RGB uint8 images -> N descriptors."""


@dataclass(frozen=True)
class BuildConfig:
    """How a map is built.

    ``store``: keep floats, codes or both; ``float_dtype``: float16 halves the float memory;
    ``thumbnail_size``: (height, width) of debug thumbnails, (0, 0) for none;
    ``camera_in_base``: the mapping camera's pose in the base frame (x y z qx qy qz qw), so
    the map stores camera poses; ``frame_id``: overrides the frame named by the source;
    ``strict``: an undecodable image aborts the build (naming it) instead of being skipped.
    """

    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    batch_size: int = 16
    store: Literal['both', 'floats', 'codes'] = 'both'
    float_dtype: Literal['float32', 'float16'] = 'float32'
    thumbnail_size: tuple[int, int] = (0, 0)
    pose_tolerance_s: float = 0.5
    camera_in_base: tuple[float, ...] = IDENTITY_EXTRINSIC
    frame_id: str = ''
    planar_max_z_range_m: float = 2.0
    strict: bool = False


def build_map(source: FrameSource, extractor: DescriptorSource,
              config: BuildConfig = BuildConfig(), *, out: str | Path | None = None,
              progress: bool = True, lock_timeout_s: float | None = None) -> MapDatabase:
    """Build (and, with ``out``, atomically save) the map of ``source``'s keyframes.

    A keyframe whose image cannot be decoded is skipped, counted and named (log and manifest
    ``source.undecodable``), or aborts the build with ``config.strict``.
    """
    if config.batch_size < 1:
        raise ConfigError(f'batch_size must be >= 1, got {config.batch_size}')
    table = source.table()
    chosen = choose_frames(table, config.keyframes)
    logger.info('%d frames, %d without a pose, %d keyframes', len(table.stamps_ns),
                int((~table.valid).sum()), len(chosen))
    decoded = DecodableFrames(source, table, chosen, config.strict)
    descriptors, thumbnails = _extract(decoded.batches(config.batch_size), extractor,
                                       len(chosen), config, progress)
    return assemble_map(table, extractor, config, decoded.kept, descriptors, thumbnails,
                        decoded.skipped, out=out, lock_timeout_s=lock_timeout_s)


def assemble_map(table: FrameTable, extractor: DescriptorSource, config: BuildConfig,
                 kept: Sequence[int], descriptors: Descriptors, thumbnails: np.ndarray | None,
                 skipped: list[dict], *, out: str | Path | None = None,
                 lock_timeout_s: float | None = None, tool: str = 'vpr build-map',
                 backend: str = '') -> MapDatabase:
    """The map of the ``kept`` frames (ascending indices into ``table``) whose rows of
    ``descriptors`` (and ``thumbnails``) were computed, with the ``skipped`` undecodable ones
    named in the manifest; saved atomically to ``out`` when given. ``backend``: what
    computed them when not ``extractor`` itself (Ray actors)."""
    chosen = np.asarray(kept, dtype=np.int64)
    if len(descriptors) != len(chosen):
        raise MapError(f'the source yielded {len(descriptors)} images for {len(chosen)} frames')
    if skipped:
        logger.warning('skipped %d undecodable frames of %d keyframes (first: %s)',
                       len(skipped), len(chosen) + len(skipped),
                       '; '.join(f"{s['name']} at {s['stamp_s']:.3f} s: {s['error']}"
                                 for s in skipped[:UNDECODABLE_NAMED]))
    if not len(chosen):
        raise MapError('no keyframe image could be decoded: nothing to build a map from')
    positions, orientations = compose(table.positions[chosen], table.orientations[chosen],
                                      Pose.from_sequence(config.camera_in_base))
    manifest = _manifest(table, extractor, config, chosen, positions, descriptors, skipped,
                         tool, backend)
    database = MapDatabase(manifest, descriptors, positions, orientations,
                           table.stamps_ns[chosen], thumbnails=thumbnails,
                           names=table.names[chosen])
    if out is not None:
        database.save(out, tool=tool, lock_timeout_s=lock_timeout_s)
    return database


class DecodableFrames:
    """The decodable images of the ``chosen`` frames, in order; ``kept`` lists their indices
    and ``skipped`` the others (name, stamp, error), or the first one raises when ``strict``."""

    def __init__(self, source: FrameSource, table: FrameTable, chosen: np.ndarray,
                 strict: bool) -> None:
        self.source, self.table, self.chosen, self.strict = source, table, chosen, strict
        self.kept: list[int] = []
        self.skipped: list[dict] = []

    def batches(self, size: int) -> Iterator[list[np.ndarray]]:
        """The decodable images of each run of ``size`` consecutive chosen frames (a skipped
        frame leaves its batch one image short), so which images share a forward pass depends
        on the keyframes only, never on which frames decode; the Ray build
        (:mod:`vpr_core.mapdb.ray_build`) batches the same way and gets the same bits."""
        batch: list[np.ndarray] = []
        group = 0
        for image in self:
            slot = len(self.kept) + len(self.skipped) - 1
            if batch and slot // size != group:
                yield batch
                batch = []
            group = slot // size
            batch.append(image)
            if (slot + 1) % size == 0:
                yield batch
                batch = []
        if batch:
            yield batch

    def __iter__(self) -> Iterator[np.ndarray]:
        frames = getattr(self.source, 'frames', None)
        if frames is not None:
            stream = frames(self.chosen)
        else:
            images = self.source.images(self.chosen)
            stream = ((int(i), image, None) for i, image in zip(self.chosen, images))
        for index, image, error in stream:
            if error is None:
                self.kept.append(int(index))
                yield image
                continue
            name = str(self.table.names[index])
            stamp_s = int(self.table.stamps_ns[index]) / 1e9
            if self.strict:
                raise UnsupportedImageError(
                    f'frame {name} (index {index}, stamp {stamp_s:.9f} s) cannot be decoded: '
                    f'{error} (without --strict / strict=false it is skipped)') from error
            if len(self.skipped) < UNDECODABLE_NAMED:
                logger.warning('skipping frame %s (stamp %.9f s): %s', name, stamp_s, error)
            self.skipped.append({'name': name, 'index': int(index), 'stamp_s': stamp_s,
                                 'error': str(error)})


def choose_frames(table: FrameTable, config: KeyframeConfig) -> np.ndarray:
    """Indices [K] (ascending) of posed frames that become keyframes."""
    posed = np.flatnonzero(table.valid)
    if not table.keyframing:
        return posed
    kept = select_keyframes(table.positions[posed], table.orientations[posed],
                            table.stamps_ns[posed], config)
    return posed[kept]


def extract_all(images: Iterable[np.ndarray], extractor: DescriptorSource, count: int,
                config: BuildConfig, progress: bool = True
                ) -> tuple[Descriptors, np.ndarray | None]:
    """Descriptors of ``count`` images in batches of ``config.batch_size`` (progress bar), and
    their thumbnails [count, h, w, 3] when ``config.thumbnail_size`` is set."""
    result, thumbnails = _extract(_batched(images, config.batch_size), extractor, count,
                                  config, progress)
    if len(result) != count:
        raise MapError(f'the source yielded {len(result)} images for {count} chosen frames')
    return result, thumbnails


def _batched(images: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for image in images:
        batch.append(image)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _extract(batches: Iterable[list[np.ndarray]], extractor: DescriptorSource, total: int,
             config: BuildConfig, progress: bool) -> tuple[Descriptors, np.ndarray | None]:
    floats, codes, thumbs = [], [], []
    keep_floats, keep_codes = kept_outputs(extractor, config)
    with tqdm(total=total, unit='img', desc='map descriptors', disable=not progress) as bar:
        for batch in batches:
            if config.thumbnail_size[0] > 0:
                thumbs.extend(thumbnail(image, config.thumbnail_size) for image in batch)
            _extract_batch(extractor, batch, floats, codes, bar)
    result = Descriptors(
        _stack(floats, (0, extractor.descriptor_dim), np.float32) if keep_floats else None,
        _stack(codes, (0, extractor.code_bits // 8), np.uint8) if keep_codes else None)
    return result, (np.stack(thumbs) if thumbs else None)


def kept_outputs(extractor: DescriptorSource, config: BuildConfig) -> tuple[bool, bool]:
    """(keep floats, keep codes) of ``config.store`` for this model; keeping nothing raises."""
    keep_floats = config.store in ('both', 'floats') and extractor.descriptor_dim > 0
    keep_codes = config.store in ('both', 'codes') and extractor.code_bits > 0
    if not keep_floats and not keep_codes:
        raise ConfigError(f"store '{config.store}' keeps nothing: the model gives "
                          f'{extractor.descriptor_dim}-d floats and {extractor.code_bits}-bit '
                          'codes')
    return keep_floats, keep_codes


def _extract_batch(extractor: DescriptorSource, batch: list, floats: list, codes: list,
                   bar) -> None:
    descriptors = extractor.extract(batch)
    if descriptors.floats is not None:
        floats.append(np.asarray(descriptors.floats, dtype=np.float32))
    if descriptors.codes is not None:
        codes.append(np.asarray(descriptors.codes, dtype=np.uint8))
    bar.update(len(batch))
    batch.clear()


def _stack(parts: list, empty_shape: tuple[int, int], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else \
        np.zeros(empty_shape, dtype)


def thumbnail(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``size`` (height, width) for a map's debug thumbnails."""
    return cv2.resize(np.ascontiguousarray(image), (size[1], size[0]),
                      interpolation=cv2.INTER_AREA)


def manifest_model(extractor: DescriptorSource, backend: str = '') -> tuple[dict, dict]:
    """(model summary, preprocessing) of a descriptor source, for the manifest; ``backend``
    (when not empty) is what computed the descriptors, else the extractor's."""
    config = getattr(extractor, 'model_config', None)
    if config is None or not dataclasses.is_dataclass(config):
        return {'name': type(extractor).__name__}, {}
    data = to_dict(config)
    data['backend'] = backend or getattr(extractor, 'backend', 'torch')   # what computed them
    return data, data.get('preprocess', {})


def _manifest(table: FrameTable, extractor: DescriptorSource, config: BuildConfig,
              chosen: np.ndarray, positions: np.ndarray, descriptors: Descriptors,
              skipped: list[dict], tool: str, backend: str = '') -> MapManifest:
    model, preprocess = manifest_model(extractor, backend)
    z_range = float(np.ptp(positions[:, 2])) if len(positions) else 0.0
    source = dict(table.info, frames=int(len(table.stamps_ns)),
                  frames_without_pose=int((~table.valid).sum()), keyframes=int(len(chosen)),
                  frames_undecodable=len(skipped), undecodable=skipped[:UNDECODABLE_NAMED])
    return MapManifest(
        model_fingerprint=extractor.fingerprint,
        descriptor_dim=extractor.descriptor_dim if descriptors.floats is not None else 0,
        code_bits=extractor.code_bits if descriptors.codes is not None else 0,
        num_places=len(chosen),
        float_dtype=config.float_dtype if descriptors.floats is not None else 'none',
        frame_id=config.frame_id or table.frame_id, pose_frame='camera',
        synthetic_poses=table.synthetic_poses, orientation_source=table.orientation_source,
        planar=z_range <= config.planar_max_z_range_m, geo_origin=table.geo_origin,
        preprocess=preprocess, model=model, source=source,
        keyframing=dict(to_dict(config.keyframes), applied=table.keyframing,
                        camera_in_base=list(config.camera_in_base)),
        created=creation_info(tool))
