"""One writer per map: an advisory ``flock`` held by every map writer (build, append, teach).

The lock file is ``.<name>.lock`` beside the map directory (in its parent), not inside it:
the directory does not exist before the first build, and every save swaps the whole directory
by rename, which would carry a lock file inside it away with the old map. The file is never
deleted (deleting a flock file lets two writers lock two different inodes); while held it
names its holder (pid, host, command, since), so a writer that gives up can say who blocks it.

The lock is re-entrant within a thread (an append holds it across load, merge and save, and
the save takes it again); another thread or process waits up to ``timeout_s``.
"""
from __future__ import annotations

from contextlib import contextmanager
import datetime
import errno
import fcntl
import json
import logging
import os
from pathlib import Path
import socket
import sys
import threading
import time
from typing import Iterator

from vpr_core.errors import MapError

logger = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 120.0
_POLL_S = 0.05
_held = threading.local()


class MapLockedError(MapError):
    """Another writer holds a map's lock for longer than the timeout."""


def lock_path(map_dir: str | Path) -> Path:
    """The lock file of map directory ``map_dir``: ``<parent>/.<name>.lock``."""
    map_dir = Path(os.path.abspath(map_dir))
    return map_dir.parent / f'.{map_dir.name}.lock'


@contextmanager
def map_write_lock(map_dir: str | Path, *, timeout_s: float | None = None,
                   purpose: str = '') -> Iterator[Path]:
    """Hold the write lock of ``map_dir`` (blocking up to ``timeout_s``, default
    :data:`LOCK_TIMEOUT_S`); :class:`MapLockedError` names the holder when it cannot be had."""
    path = lock_path(map_dir)
    depths = _depths()
    if depths.get(path, 0):
        depths[path] += 1
        try:
            yield path
        finally:
            depths[path] -= 1
        return
    timeout_s = LOCK_TIMEOUT_S if timeout_s is None else float(timeout_s)
    fd = _acquire(Path(map_dir), path, timeout_s, purpose)
    depths[path] = 1
    try:
        yield path
    finally:
        depths.pop(path, None)
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)     # closing the descriptor releases the flock


def holder(map_dir: str | Path) -> str:
    """Who holds the lock of ``map_dir`` as the holder wrote it ('' when nobody wrote)."""
    try:
        text = lock_path(map_dir).read_text(encoding='utf-8')
        info = json.loads(text)
    except (OSError, ValueError):
        return ''
    if not isinstance(info, dict):
        return ''
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
            f"({info.get('command', '')})")


def _depths() -> dict[Path, int]:
    if not hasattr(_held, 'depths'):
        _held.depths = {}
    return _held.depths


def _acquire(map_dir: Path, path: Path, timeout_s: float, purpose: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise MapError(f'cannot open the map lock file {path}: {exc}') from exc
    deadline = time.monotonic() + max(timeout_s, 0.0)
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise MapError(f'cannot lock {path}: {exc}') from exc
        if time.monotonic() >= deadline:
            os.close(fd)
            raise MapLockedError(
                f'map {map_dir} is being written by another writer: '
                f"{holder(map_dir) or 'holder unknown'}; waited "
                f'{timeout_s:.0f} s for its lock {path} (retry when it is done, or raise the '
                'lock timeout)')
        if not announced:
            logger.info('waiting for the map lock %s (held by %s)', path,
                        holder(map_dir) or 'another writer')
            announced = True
        time.sleep(_POLL_S)
    _write_holder(fd, purpose)
    return fd


def _write_holder(fd: int, purpose: str) -> None:
    command = ' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    info = {'pid': os.getpid(), 'host': socket.gethostname(),
            'command': (purpose + ': ' if purpose else '') + command[:300],
            'since': datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec='seconds')}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + '\n').encode(), 0)
