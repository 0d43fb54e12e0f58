"""``vpr build-map --engine ray``: the map build as batch inference on Ray Data.

The driver lists the frames and chooses the keyframes exactly as the single-process build
(:func:`vpr_core.mapdb.builder.build_map`), cuts them into groups of ``batch_size``
consecutive keyframes and makes a Ray dataset of the groups. Ray tasks read and decode each
group (image files, or one time window of a rosbag2); a pool of actors, each holding one copy of
the model (one GPU per actor where the cluster has GPUs, else one CPU and one thread),
describes each group in one forward pass, the very batch the single-process build makes. The
driver gathers the groups in order and writes one map through the same writer, so the map's
arrays, model fingerprint and content id equal the single-process map's on the same input and
the same kind of device. A worker failure stops the build with an error naming it; nothing is
written.

Sources must be readable at the same path on every node (a shared or replicated filesystem);
the model travels through Ray's object store.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from vpr_core.descriptors import Descriptors
from vpr_core.errors import ConfigError, MapError, VPRError
from vpr_core.mapdb.builder import (assemble_map, BuildConfig, choose_frames, DescriptorSource,
                                    kept_outputs)
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.ray_worker import (BagReader, FolderReader, GroupDescriber, ModelSpec,
                                       read_group)
from vpr_core.mapdb.source import BagSource, FrameTable, ImageFolderSource

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install -r requirements-ray.txt (or pip install 'vpr_ros[ray]')"
MAX_BLOCKS = 1000       # dataset blocks of group rows (a block holds one or more groups)
LOOPBACK_ONLY = 'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'     # '0': Ray's single-machine mode
USAGE_STATS = 'RAY_USAGE_STATS_ENABLED'


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide the Ray build runs.

    ``address``: None starts a local Ray bound to loopback and stops it afterwards; ``auto``
    or ``HOST:PORT`` joins a running cluster (``ray start --head`` on one node, ``ray start
    --address`` on the others). ``workers``: describing actors (0: one per GPU of the cluster,
    else one per CPU). ``gpus_per_worker``: GPUs each actor takes where the cluster has GPUs
    (below 1 shares a GPU). ``threads_per_worker``: CPU threads of an actor. ``local_cpus``:
    CPUs of a local Ray (None: every core).
    """

    address: str | None = None
    workers: int = 0
    gpus_per_worker: float = 1.0
    threads_per_worker: int = 1
    local_cpus: int | None = None


def build_map_ray(source: ImageFolderSource | BagSource, extractor: DescriptorSource,
                  config: BuildConfig = BuildConfig(), *, ray_config: RayConfig = RayConfig(),
                  worker_extractor: Callable[[], DescriptorSource] | None = None,
                  out: str | Path | None = None, progress: bool = True,
                  lock_timeout_s: float | None = None,
                  table: FrameTable | None = None) -> MapDatabase:
    """Build (and, with ``out``, atomically save) the map of ``source`` on Ray.

    ``table``: ``source.table()`` when the caller has read it already (a bag's index is
    then not read again).

    ``extractor`` describes the model for the manifest (it computes nothing here; the
    manifest records the backend the actors ran, each resolving ``auto`` on its device);
    ``worker_extractor`` makes each actor's copy (default: ``extractor``'s model shipped as
    bytes, or a copy of a weight-free source). Every actor's fingerprint must equal
    ``extractor``'s.
    """
    if config.batch_size < 1:
        raise ConfigError(f'batch_size must be >= 1, got {config.batch_size}')
    kept_outputs(extractor, config)
    table = source.table() if table is None else table
    chosen = choose_frames(table, config.keyframes)
    logger.info('%d frames, %d without a pose, %d keyframes', len(table.stamps_ns),
                int((~table.valid).sum()), len(chosen))
    if not len(chosen):
        raise MapError('no keyframe to build a map from')
    reader = make_reader(source, table)
    make = worker_extractor or default_worker_extractor(extractor)
    with ray_session(ray_config) as ray, _data_context(ray):
        rows = _run(ray, table, chosen, reader, make, config, ray_config)
        gathered = _gather(rows, table, chosen, config, extractor.fingerprint, progress)
    kept, descriptors, thumbnails, skipped, backends = gathered
    return assemble_map(table, extractor, config, kept, descriptors, thumbnails, skipped,
                        out=out, lock_timeout_s=lock_timeout_s,
                        tool='vpr build-map --engine ray', backend='+'.join(sorted(backends)))


def make_reader(source: ImageFolderSource | BagSource, table: FrameTable
                ) -> FolderReader | BagReader:
    """The picklable reader of a source's frames."""
    if isinstance(source, ImageFolderSource):
        return FolderReader(tuple(str(path) for path in source.files))
    if isinstance(source, BagSource):
        return BagReader.open(source.path, source.image_topic, table.stamps_ns)
    raise ConfigError(f'the Ray build reads image folders and rosbag2 files; got '
                      f'{type(source).__name__}')


def default_worker_extractor(extractor: DescriptorSource) -> Callable[[], DescriptorSource]:
    """Each actor's maker of ``extractor``: its model as bytes, or a pickled copy."""
    if hasattr(extractor, 'model'):
        return ModelSpec.of(extractor)
    return functools.partial(_copy_of, extractor)


def _copy_of(extractor: DescriptorSource) -> DescriptorSource:
    return extractor


@contextlib.contextmanager
def ray_session(ray_config: RayConfig) -> Iterator:
    """``ray`` joined or started (:func:`connect`) for the block; a Ray started here is shut
    down afterwards and the environment variables :func:`connect` set are restored, so a
    later join of this process (``--address``) does not inherit the loopback-only mode."""
    saved = {name: os.environ.get(name) for name in (LOOPBACK_ONLY, USAGE_STATS)}
    try:
        started = connect(ray_config)
        ray = _import_ray()
        try:
            yield ray
        finally:
            if started:
                ray.shutdown()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _data_context(ray) -> Iterator[None]:
    """Ray Data's (process-global) context set for the build, restored afterwards."""
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved


def connect(ray_config: RayConfig) -> bool:
    """Join or start Ray; True when this call started it (and must stop it).

    A local Ray runs in Ray's single-machine mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
    read when ``ray`` is imported, set here unless given): every Ray process binds to
    127.0.0.1 and nothing listens on another interface.
    """
    os.environ.setdefault(USAGE_STATS, '0')
    late = 'ray' in sys.modules and LOOPBACK_ONLY not in os.environ
    if not ray_config.address:
        os.environ.setdefault(LOOPBACK_ONLY, '0')
    ray = _import_ray()
    if ray.is_initialized():
        logger.info('using the Ray this process is already connected to')
        return False
    if ray_config.address:
        logger.info('joining the Ray cluster at %s', ray_config.address)
        ray.init(address=ray_config.address, configure_logging=False)
    else:
        if late or os.environ.get(LOOPBACK_ONLY) != '0':
            logger.warning('%s was not 0 when ray was imported: the local Ray may listen on '
                           'every interface', LOOPBACK_ONLY)
        logger.info('starting a local Ray (loopback only)')
        ray.init(address='local', num_cpus=ray_config.local_cpus, include_dashboard=False,
                 _node_ip_address='127.0.0.1', configure_logging=False)
    return True


def worker_resources(ray_config: RayConfig, cluster: dict) -> tuple[int, dict]:
    """(actor count, Ray resources per actor) for a cluster's resources."""
    gpus = float(cluster.get('GPU', 0.0))
    if gpus >= ray_config.gpus_per_worker > 0:
        count = ray_config.workers or int(gpus // ray_config.gpus_per_worker)
        return count, {'num_gpus': ray_config.gpus_per_worker, 'num_cpus': 1}
    count = ray_config.workers or max(1, int(cluster.get('CPU', 1)))
    return count, {'num_cpus': 1}


def check_fits(count: int, resources: dict, cluster: dict) -> None:
    """ConfigError unless ``count`` actors of ``resources`` fit in the cluster's resources
    (Ray Data would wait for the missing actors forever)."""
    if count < 1:
        raise ConfigError(f'the Ray build needs at least one worker, got {count}')
    for key, name in (('num_cpus', 'CPU'), ('num_gpus', 'GPU')):
        need, have = count * float(resources.get(key, 0.0)), float(cluster.get(name, 0.0))
        if need > have + 1e-9:
            raise ConfigError(
                f'{count} Ray workers need {need:g} {name}s ({resources.get(key):g} each) but '
                f'the cluster has {have:g}: lower --workers (or join a larger cluster)')


def _run(ray, table, chosen, reader, make, config, ray_config):
    """The (lazy) dataset of described groups."""
    size = config.batch_size
    groups = [{'group': k, 'indices': chosen[start:start + size]}
              for k, start in enumerate(range(0, len(chosen), size))]
    cluster = ray.cluster_resources()
    count, resources = worker_resources(ray_config, cluster)
    check_fits(count, resources, cluster)
    logger.info('Ray build: %d groups of up to %d keyframes, %d actors (%s each)',
                len(groups), size, count, resources)
    dataset = ray.data.from_items(groups, override_num_blocks=min(len(groups), MAX_BLOCKS))
    dataset = dataset.map(functools.partial(read_group, reader=reader, strict=config.strict,
                                            names=table.names))
    return dataset.map_batches(
        GroupDescriber, batch_size=1, compute=ray.data.ActorPoolStrategy(size=count),
        fn_constructor_kwargs={'make_extractor': make, 'config': config,
                               'threads': ray_config.threads_per_worker}, **resources)


def _gather(dataset, table, chosen, config, fingerprint, progress):
    kept, floats, codes, thumbs, skipped, backends = [], [], [], [], [], set()
    expected = 0
    with tqdm(total=len(chosen), unit='img', desc='map descriptors (ray)',
              disable=not progress) as bar:
        for row in _rows(dataset):
            if int(row['group']) != expected:
                raise MapError(f'Ray returned group {row["group"]} where {expected} was due')
            if row['fingerprint'] != fingerprint:
                raise MapError(f'a Ray worker described with model {row["fingerprint"]}, not '
                               f'{fingerprint}: every worker must run the same model')
            expected += 1
            backends.add(str(row['backend']))
            kept.extend(np.asarray(row['kept'], np.int64).tolist())
            floats.append(np.asarray(row['floats'], np.float32))
            codes.append(np.asarray(row['codes'], np.uint8))
            thumbs.append(np.asarray(row['thumbs'], np.uint8))
            skipped.extend(_skipped(json.loads(row['errors']), table))
            bar.update(len(row['kept']) + len(json.loads(row['errors'])))
    if expected * config.batch_size < len(chosen):
        raise MapError(f'Ray returned {expected} groups for {len(chosen)} keyframes')
    keep_floats, keep_codes = floats[0].shape[1] > 0, codes[0].shape[1] > 0
    descriptors = Descriptors(np.concatenate(floats) if keep_floats else None,
                              np.concatenate(codes) if keep_codes else None)
    thumbnails = None
    if config.thumbnail_size[0] > 0 and kept:
        thumbnails = np.concatenate([t for t in thumbs if len(t)])
    return kept, descriptors, thumbnails, skipped, backends - {''}


def _rows(dataset):
    """The dataset's rows in order; a failed task or actor becomes one MapError."""
    ray = _import_ray()
    from ray.data.exceptions import UserCodeException
    try:
        yield from dataset.iter_rows()
    except (ray.exceptions.RayError, UserCodeException) as exc:
        cause = _root_cause(exc)
        raise MapError(f'a Ray worker failed, no map was written: {cause}') from exc


_RAISED = re.compile(r'^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception)): (.+)$')


def _root_cause(exc: BaseException) -> str:
    """What a worker's code raised, as 'Type: message', from a Ray error chain: one of our
    errors if present, else the last 'SomeError: message' line of the remote traceback that
    is not Ray's own, else the first line of ``exc``."""
    queue, seen, lines = [exc], set(), []
    while queue:
        error = queue.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, VPRError):
            return _one_line(error)
        lines.extend(str(error).splitlines())
        queue.extend(e for e in (getattr(error, 'cause', None), error.__cause__)
                     if isinstance(e, BaseException))
    raised = [m for m in map(_RAISED.match, (line.strip() for line in lines))
              if m and not m.group(0).startswith('ray.') and 'Ray' not in m.group(1)]
    if raised:
        return f'{raised[-1].group(1)}: {raised[-1].group(2)}'
    return _one_line(exc)


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f'{type(error).__name__}: {lines[0] if lines else ""}'


def _skipped(errors: list, table: FrameTable) -> list[dict]:
    return [{'name': str(table.names[index]), 'index': int(index),
             'stamp_s': int(table.stamps_ns[index]) / 1e9, 'error': error}
            for index, error in errors]


def _import_ray():
    try:
        import ray
        import ray.data     # noqa: F401  (the Data library, not only Core)
    except ImportError as exc:
        raise ConfigError(f'--engine ray needs Ray Data: {INSTALL_HINT}') from exc
    return ray
