"""Map directories written whole: a temporary sibling, fsynced, swapped in atomically.

A map is written into ``.<name>.tmp-<pid>@<host>-<id>`` beside its target; every file and the
directory are fsynced before the directory is renamed into place. An existing map is swapped
with ``renameat2`` (``RENAME_EXCHANGE``, one atomic step) where the kernel offers it; elsewhere
it is moved to a hidden backup first, and :func:`resolve_map_dir` falls back to that backup if
a crash struck between the two renames. So at every instant a complete map can be found.

Every write holds the map's advisory lock (:mod:`vpr_core.mapdb.lock`). Under it, temporary
directories of earlier writes that were interrupted (whose process is gone, or any older than
:data:`STALE_TMP_AGE_S`) are removed: a live writer of the same map cannot exist while the
lock is held.
"""
from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
import shutil
import socket
import time
from typing import Callable
import uuid

from vpr_core.errors import MapError
from vpr_core.files import fsync_dir
from vpr_core.mapdb.lock import map_write_lock

logger = logging.getLogger(__name__)

MANIFEST = 'manifest.json'
STALE_TMP_AGE_S = 3600.0
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def write_map_dir(target: str | Path, fill: Callable[[Path], None], *,
                  lock_timeout_s: float | None = None) -> None:
    """Create or replace the directory ``target`` atomically; ``fill(tmp)`` writes its files.

    If ``fill`` raises (disk full, interrupt), the temporary directory is removed and whatever
    was at ``target`` before is untouched. The map's write lock is held throughout.
    """
    target = Path(target)
    with map_write_lock(target, timeout_s=lock_timeout_s, purpose='write map'):
        if target.exists() and not _replaceable(target):
            raise MapError(f'refusing to replace {target}: it exists and is not a map '
                           f'directory (no {MANIFEST}); choose another output path')
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        # Not mkdtemp: its 0700 mode would stick to the map, which the node may run as another
        # account to read; mkdir honours the umask.
        tmp = target.parent / (f'.{target.name}.tmp-{os.getpid()}@{_host()}-'
                               f'{uuid.uuid4().hex[:12]}')
        tmp.mkdir()
        try:
            fill(tmp)
            fsync_dir(tmp)
            _swap_in(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for stale in target.parent.glob(f'.{target.name}.old-*'):
            logger.info('removing %s left by an earlier interrupted save', stale)
            shutil.rmtree(stale, ignore_errors=True)


def remove_stale_temporaries(target: str | Path, max_age_s: float = STALE_TMP_AGE_S
                             ) -> list[Path]:
    """Remove the temporary directories of interrupted writes of map ``target``: those whose
    writer process (on this host) is gone, and any older than ``max_age_s``. Call with the
    map's write lock held. Returns the paths removed."""
    target = Path(target)
    removed = []
    for tmp in target.parent.glob(f'.{target.name}.tmp-*'):
        try:
            age_s = time.time() - tmp.lstat().st_mtime
        except FileNotFoundError:
            continue
        pid, host = _tmp_owner(tmp.name)
        dead = pid is not None and host == _host() and pid != os.getpid() and \
            not _process_alive(pid)
        if dead or age_s > max_age_s:
            logger.warning('removing %s left by an interrupted map write (%s)', tmp,
                           f'process {pid} is gone' if dead else f'{age_s / 3600:.1f} h old')
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _tmp_owner(name: str) -> tuple[int | None, str]:
    """(pid, host) from ``.<map>.tmp-<pid>@<host>-<id>``; (None, '') for other names."""
    owner = name.rpartition('.tmp-')[2].rpartition('-')[0]
    pid, _, host = owner.partition('@')
    return (int(pid), host) if pid.isdigit() and host else (None, '')


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # alive, another account's
        return True
    return True


def _host() -> str:
    return ''.join(c if c.isalnum() or c in '._' else '_' for c in socket.gethostname())


def resolve_map_dir(path: str | Path) -> Path:
    """The directory to read for map ``path``: itself, or the newest backup left by a crash
    in the middle of a non-atomic replace."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    backups = sorted(path.parent.glob(f'.{path.name}.old-*'), key=lambda p: p.stat().st_mtime)
    backups = [b for b in backups if (b / MANIFEST).is_file()]
    if not path.exists() and backups:
        logger.warning('map %s is missing; reading the backup %s left by an interrupted save',
                       path, backups[-1])
        return backups[-1]
    if not path.exists():
        raise MapError(f'map directory not found: {path}')
    raise MapError(f'{path} is not a map directory: {MANIFEST} is missing')


def _replaceable(target: Path) -> bool:
    return target.is_dir() and ((target / MANIFEST).is_file() or not any(target.iterdir()))


def _swap_in(tmp: Path, target: Path) -> None:
    parent = target.parent
    if not target.exists():
        os.rename(tmp, target)
        fsync_dir(parent)
        return
    if _rename_exchange(tmp, target):
        fsync_dir(parent)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    backup = parent / f'.{target.name}.old-{uuid.uuid4().hex[:12]}'
    os.rename(target, backup)
    os.rename(tmp, target)
    fsync_dir(parent)
    shutil.rmtree(backup, ignore_errors=True)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with Linux renameat2; False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        logger.debug('renameat2 exchange unsupported here (errno %d)', ctypes.get_errno())
        return False
    return True
