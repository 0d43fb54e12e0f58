"""What runs on Ray workers during ``vpr build-map --engine ray``: reading and decoding groups
of keyframes (Ray tasks) and describing them (one actor per model copy).

Everything here is picklable and self-contained, so a worker on another node needs only this
package and read access to the source at the same path. The model travels as the bytes of its
checkpoint through Ray's object store, so workers need no copy of the weights file.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vpr_core import bags
from vpr_core.backends import DEFAULT_BACKEND
from vpr_core.errors import MapError, UnsupportedImageError
from vpr_core.image import load_image_file
from vpr_core.mapdb.builder import BuildConfig, DescriptorSource, kept_outputs, thumbnail

logger = logging.getLogger(__name__)

# (frame index, RGB image or None, why it could not be decoded or None)
ReadFrame = tuple[int, np.ndarray | None, str | None]


@dataclass(frozen=True)
class ModelSpec:
    """How a worker makes its descriptor source: one of our checkpoints, as bytes, or the
    weight-free pixel baseline (``checkpoint`` None), with every extractor setting that
    changes the descriptors (``fp16``: None is the worker device's default, ``onnx_cache``:
    where the onnxruntime / TensorRT backends keep the exported graph, a path every node can
    write)."""

    checkpoint: bytes | None
    device: str = 'auto'
    backend: str = DEFAULT_BACKEND
    batch_size: int = 16
    fp16: bool | None = None
    crossimage_policy: str = 'single'
    onnx_cache: str | None = None

    @classmethod
    def of(cls, extractor: Any, device: str = 'auto', backend: str | None = None, *,
           fp16: bool | None | str = 'extractor', onnx_cache: str | Path | None = None
           ) -> 'ModelSpec':
        """The spec of a ``vpr_core.extractor.Extractor``: its model saved to bytes, its
        batch size and cross-image policy, the workers' ``device`` (``auto``: a GPU where the
        worker has one) and ``backend`` (None: the one the extractor was asked for, so
        ``auto`` is resolved on each worker's own device).

        ``fp16`` ``'extractor'``: the extractor's precision where it runs on CUDA (fp16 on or
        off), else None (a CPU extractor says nothing of CUDA workers: their default, as a
        single-process build there). ``onnx_cache``: the workers' ONNX cache folder.
        """
        from vpr_core.model.checkpoint import save_model
        if not getattr(extractor, 'holds_weights', True):     # another backend runs it
            blob = _checkpoint_of(extractor)
        else:
            with tempfile.TemporaryDirectory(prefix='vpr-ray-model-') as folder:
                path = Path(folder) / 'model.safetensors'
                save_model(extractor.model, path)
                blob = path.read_bytes()
        if fp16 == 'extractor':
            on_cuda = getattr(getattr(extractor, 'device', None), 'type', None) == 'cuda'
            fp16 = bool(extractor.fp16) if on_cuda else None
        backend = backend or getattr(extractor, 'requested_backend', None) or extractor.backend
        return cls(blob, device=device, backend=backend,
                   batch_size=extractor.batch_size, fp16=fp16,
                   crossimage_policy=str(extractor.crossimage_policy),
                   onnx_cache=None if onnx_cache is None else str(onnx_cache))

    def __call__(self) -> DescriptorSource:
        """A descriptor source on this worker (the checkpoint's fingerprint is verified)."""
        if self.checkpoint is None:
            from vpr_core.mapdb.pixel import PixelDescriptors
            return PixelDescriptors()
        from vpr_core.extractor import Extractor
        from vpr_core.model.checkpoint import load_model
        with tempfile.TemporaryDirectory(prefix='vpr-ray-model-') as folder:
            path = Path(folder) / 'model.safetensors'
            path.write_bytes(self.checkpoint)
            model = load_model(path)
        return Extractor(model, device=self.device, batch_size=self.batch_size,
                         backend=self.backend, fp16=self.fp16,
                         crossimage_policy=self.crossimage_policy,  # type: ignore[arg-type]
                         onnx_cache=self.onnx_cache)


def _checkpoint_of(extractor: Any) -> bytes:
    """The bytes of the checkpoint ``extractor`` was loaded from, if it still holds that
    model (a file replaced since would give the workers another one)."""
    from vpr_core.model.checkpoint import read_metadata
    path = Path(extractor.weights_path)
    blob = path.read_bytes()        # each worker checks these bytes' fingerprint on load
    if read_metadata(path).fingerprint != extractor.fingerprint:
        raise MapError(f'{path} changed since its model was loaded (fingerprint '
                       f'{extractor.fingerprint[:16]}): load it again')
    return blob


@dataclass(frozen=True)
class FolderReader:
    """Frames of an image folder: ``files[i]`` is frame i."""

    files: tuple[str, ...]

    def read(self, indices: Sequence[int]) -> list[ReadFrame]:
        """Decoded frames of ``indices`` (ascending), undecodable ones with their error."""
        frames = []
        for index in indices:
            try:
                frames.append((int(index), load_image_file(self.files[int(index)]), None))
            except UnsupportedImageError as exc:
                frames.append((int(index), None, str(exc)))
        return frames


@dataclass(frozen=True)
class BagReader:
    """Image messages of ``topic`` in a rosbag2; ``receive_ns[i]``: bag time of message i,
    so a group reads only its own time window instead of the bag from its start."""

    path: str
    topic: str
    receive_ns: np.ndarray
    stamps_ns: np.ndarray

    @classmethod
    def open(cls, path: str | Path, topic: str, stamps_ns: np.ndarray) -> 'BagReader':
        """Index the receive times of ``topic`` (one pass, nothing deserialised)."""
        reader = bags.open_reader(path)
        try:
            connections = bags.topic_connections(reader, path, topic, bags.IMAGE_TYPES)
            times = [t for _, t, _ in reader.messages(connections=connections)]
        finally:
            reader.close()
        return cls(str(path), topic, np.asarray(times, np.int64), np.asarray(stamps_ns))

    def read(self, indices: Sequence[int]) -> list[ReadFrame]:
        """Decoded frames of ``indices`` (ascending), undecodable ones with their error."""
        wanted = set(int(i) for i in indices)
        first, last = min(wanted), max(wanted)
        position = int(np.searchsorted(self.receive_ns, self.receive_ns[first], 'left'))
        reader = bags.open_reader(self.path)
        frames = []
        try:
            connections = bags.topic_connections(reader, self.path, self.topic, bags.IMAGE_TYPES)
            window = reader.messages(connections=connections, start=int(self.receive_ns[first]),
                                     stop=int(self.receive_ns[last]) + 1)
            for index, (connection, stamp, raw) in enumerate(window, start=position):
                if index not in wanted:
                    continue
                msg = reader.deserialize(raw, connection.msgtype)
                self._check(index, bags.header_stamp_ns(msg.header, stamp))
                try:
                    frames.append((index, bags.decode_image_message(msg, connection.msgtype),
                                   None))
                except UnsupportedImageError as exc:
                    frames.append((index, None, str(exc)))
        finally:
            reader.close()
        if len(frames) != len(wanted):
            raise MapError(f'bag {self.path}: read {len(frames)} of {len(wanted)} messages of '
                           f'{self.topic} between indices {first} and {last}')
        return frames

    def _check(self, index: int, stamp_ns: int) -> None:
        if stamp_ns != int(self.stamps_ns[index]):
            raise MapError(f'bag {self.path}: message {index} of {self.topic} has stamp '
                           f'{stamp_ns}, the frame table says {int(self.stamps_ns[index])} '
                           '(messages with equal receive times in another order?)')


def read_group(row: dict, *, reader: FolderReader | BagReader, strict: bool,
               names: np.ndarray) -> dict:
    """Ray task: one group row ``{group, indices}`` -> its decoded pixels (flat uint8 and
    [n, 3] shapes) and the undecodable frames (JSON ``[[index, error], ...]``)."""
    frames = reader.read(np.asarray(row['indices']).tolist())
    images = [image for _, image, _ in frames if image is not None]
    errors = [[index, error] for index, _, error in frames if error is not None]
    if strict and errors:
        index, error = errors[0]
        raise UnsupportedImageError(
            f'frame {names[index]} (index {index}) cannot be decoded: {error} (without '
            '--strict / strict=false it is skipped)')
    return {'group': row['group'],
            'kept': np.asarray([i for i, image, _ in frames if image is not None], np.int64),
            'pixels': np.concatenate([im.reshape(-1) for im in images]) if images else
            np.zeros(0, np.uint8),
            'shapes': np.asarray([im.shape for im in images], np.int64).reshape(-1, 3),
            'errors': json.dumps(errors)}


class GroupDescriber:
    """Ray actor: loads the model once, describes each group's images in one call of the
    extractor (the single-process build's batch), returns floats, codes and thumbnails."""

    def __init__(self, make_extractor: Callable[[], DescriptorSource], config: BuildConfig,
                 threads: int) -> None:
        from vpr_core.devices import apply_thread_policy
        apply_thread_policy(threads)
        self.extractor = make_extractor()
        self.config = config
        self.keep_floats, self.keep_codes = kept_outputs(self.extractor, config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """A batch of group rows -> one output row per group, same order."""
        out: dict[str, list] = {k: [] for k in ('group', 'kept', 'floats', 'codes', 'thumbs',
                                                'errors', 'fingerprint', 'backend')}
        for row in range(len(batch['group'])):
            images = _unpack(batch['pixels'][row], batch['shapes'][row])
            floats, codes = self._describe(images)
            size = self.config.thumbnail_size
            thumbs = [thumbnail(image, size) for image in images] if size[0] > 0 else []
            out['group'].append(int(batch['group'][row]))
            out['kept'].append(np.asarray(batch['kept'][row], np.int64))
            out['floats'].append(floats)
            out['codes'].append(codes)
            out['thumbs'].append(np.stack(thumbs) if thumbs else
                                 np.zeros((0, 0, 0, 3), np.uint8))
            out['errors'].append(str(batch['errors'][row]))
            out['fingerprint'].append(self.extractor.fingerprint)
            out['backend'].append(str(getattr(self.extractor, 'backend', '')))
        return out

    def _describe(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        dim, width = self.extractor.descriptor_dim, self.extractor.code_bits // 8
        floats = np.zeros((len(images), dim if self.keep_floats else 0), np.float32)
        codes = np.zeros((len(images), width if self.keep_codes else 0), np.uint8)
        if not images:
            return floats, codes
        descriptors = self.extractor.extract(images)
        if self.keep_floats:
            floats = np.asarray(descriptors.floats, dtype=np.float32)
        if self.keep_codes:
            codes = np.asarray(descriptors.codes, dtype=np.uint8)
        return floats, codes


def _unpack(pixels: np.ndarray, shapes: np.ndarray) -> list[np.ndarray]:
    images, start = [], 0
    for shape in np.asarray(shapes, np.int64).reshape(-1, 3):
        size = int(np.prod(shape))
        images.append(np.asarray(pixels[start:start + size], np.uint8).reshape(shape))
        start += size
    return images
