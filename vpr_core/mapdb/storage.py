"""Crash-safe map directories: atomic write, atomic replace, checked reads (no pickle).

A map is written into a temporary sibling directory; every file and the directory are fsynced
before the directory is renamed into place. An existing map is swapped with ``renameat2``
(``RENAME_EXCHANGE``, one atomic step) where the kernel offers it; elsewhere it is moved to a
hidden backup first, and :func:`resolve_map_dir` falls back to that backup if a crash struck
between the two renames. So at every instant a complete map can be found.

Every write holds the map's advisory lock (:mod:`vpr_core.mapdb.lock`). Under it, temporary
directories of earlier writes that were interrupted (``.<name>.tmp-<pid>@<host>-<id>``, whose
process is gone, or any older than :data:`STALE_TMP_AGE_S`) are removed: a live writer of
the same map cannot exist while the lock is held.

What a load checks, and when (:func:`read_array`): every time, that each file exists, has
the size the manifest records (a truncated or extended file is always caught) and a header
of the recorded shape and dtype. The sha256 of the content is computed in full the first time
a file is read on this machine and whenever it may have changed since: a small verification
cache (``$VPR_CACHE/map_verification.json``, :class:`VerificationCache`) records, per
absolute path, the sha256 found with the file's size, mtime_ns, ctime_ns, inode and device;
a later load whose file still shows all of them and the manifest's sha256 skips the hash. Any
write to a file changes its ctime (which no ordinary call can set back), so content
changed behind the cache's back is hashed again. A file is recorded only when its ctime lies
:data:`RACY_MARGIN_S` before the hash began, so a write in the same clock tick as the hash
cannot hide (git's "racy clean" rule). What the stat cannot see, a disk that alters data
without a write (bit rot), only a full hash finds: ``verify='full'`` always hashes
(``False`` never).

Approximate search indexes built for a loaded map are kept in its folder
(:class:`StoredIndexes`, ``index_<kind>.faissbin``, recorded in the manifest's ``indexes``)
and hashed in full whenever they are read: a stale, damaged or missing one is rebuilt.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

from vpr_core.errors import MapError
from vpr_core.files import fsync_dir, sha256_file, write_file_atomic
from vpr_core.mapdb.lock import map_write_lock
from vpr_core.mapdb.manifest import read_manifest

logger = logging.getLogger(__name__)

MANIFEST = 'manifest.json'
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
STALE_TMP_AGE_S = 3600.0
VERIFICATION_FILE = 'map_verification.json'
RACY_MARGIN_S = 2.0
_VERIFICATION_ENTRIES = 4096
INDEX_LOCK_TIMEOUT_S = 5.0


class _HashingFile:
    """File-like writer that hashes and counts the bytes it writes."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        view = memoryview(data).cast('B')
        self.sha256.update(view)
        self.size += len(view)
        return self.handle.write(view)


def write_array(directory: Path, name: str, array: np.ndarray) -> dict:
    """Write ``array`` as ``directory/name`` (.npy, no pickle), fsynced; returns its entry
    for the manifest: sha256, bytes, shape, dtype."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise MapError(f'{name}: object arrays cannot be stored in a map (no pickle)')
    with open(directory / name, 'wb') as handle:
        hashed = _HashingFile(handle)
        np.lib.format.write_array(hashed, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return {'sha256': hashed.sha256.hexdigest(), 'bytes': hashed.size,
            'shape': list(array.shape), 'dtype': array.dtype.str}


def write_text(directory: Path, name: str, text: str) -> None:
    """Write a small text file, fsynced."""
    with open(directory / name, 'w', encoding='utf-8') as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


class VerificationCache:
    """Files whose sha256 was checked on this machine, with the stat that vouches for them.

    ``path``: the JSON file (default ``$VPR_CACHE/map_verification.json``). Unreadable or
    damaged: starts empty; unwritable: :meth:`save` logs and the next load hashes again.
    """

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            from vpr_core.model.weights import cache_dir
            path = cache_dir() / VERIFICATION_FILE
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self._changed = False
        try:
            data = json.loads(self.path.read_text(encoding='utf-8'))
            self.entries = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            pass

    def vouches(self, path: Path, sha256: str) -> bool:
        """True when ``path`` was hashed to ``sha256`` and its stat has not changed since."""
        entry = self.entries.get(str(path.resolve()))
        return isinstance(entry, dict) and entry.get('sha256') == sha256 and \
            entry.get('stat') == _stat_key(path.stat())

    def record(self, path: Path, sha256: str, hashed_from_ns: int) -> None:
        """Note that ``path`` hashed to ``sha256`` in a hash begun at ``hashed_from_ns``."""
        info = path.stat()
        if info.st_ctime_ns > hashed_from_ns - int(RACY_MARGIN_S * 1e9):
            return          # written too recently: a same-tick change could hide
        key = str(path.resolve())
        self.entries.pop(key, None)
        self.entries[key] = {'sha256': sha256, 'stat': _stat_key(info)}
        self._changed = True

    def save(self) -> None:
        """Write the cache atomically (the newest entries, at most a few thousand)."""
        if not self._changed:
            return
        entries = dict(list(self.entries.items())[-_VERIFICATION_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomic(self.path.parent, self.path.name,
                              json.dumps(entries, sort_keys=True).encode())
            self._changed = False
        except OSError as exc:
            logger.info('cannot write the map verification cache %s (%s): the next load '
                        'hashes the map again', self.path, exc)


def _now_ns() -> int:
    return time.time_ns()


class StoredIndexes:
    """Approximate search indexes kept in the map folder ``map_dir`` (an
    :class:`~vpr_core.mapdb.index.IndexStore`) for the map ``map_id`` whose codes file has
    ``codes_sha256``. Reads trust nothing the manifest does not vouch for; writes are atomic,
    under the map's write lock, and only while the folder still holds the same map. A folder
    that cannot be written (a read-only map) only costs a rebuild at every load."""

    def __init__(self, map_dir: Path, map_id: str, codes_sha256: str) -> None:
        self.map_dir = Path(map_dir)
        self.map_id = map_id
        self.codes_sha256 = codes_sha256

    def load(self, params: dict) -> bytes | None:
        """The stored bytes of the index of ``params``; None (with a warning when the stored
        one is stale or damaged) when there is none to use."""
        kind = params['kind']
        manifest = read_manifest(self.map_dir)
        entry = manifest.indexes.get(kind)
        if entry is None or manifest.map_id != self.map_id:
            return None
        if entry.get('params') != params:
            logger.info('the stored %s index was built with %s, not %s: rebuilding it', kind,
                        entry.get('params'), params)
            return None
        path = self.map_dir / str(entry.get('file', ''))
        problem = ''
        if entry.get('codes_sha256') != self.codes_sha256:
            problem = 'was built from other codes (stale)'
        elif not path.is_file() or path.stat().st_size != entry.get('bytes'):
            problem = 'is missing or has the wrong size'
        else:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == entry.get('sha256'):
                return data
            problem = 'is corrupt (sha256 differs from the manifest)'
        logger.warning('the stored %s index %s %s; rebuilding it', kind, path, problem)
        return None

    def save(self, params: dict, data: bytes) -> None:
        """Keep ``data``, the index of ``params``, replacing a stored one of the same kind."""
        kind = params['kind']
        name = f'index_{kind}.faissbin'
        try:
            with map_write_lock(self.map_dir, timeout_s=INDEX_LOCK_TIMEOUT_S,
                                purpose='store search index'):
                manifest = read_manifest(self.map_dir)
                if manifest.map_id != self.map_id:
                    logger.info('map %s changed since it was loaded: its %s index is not '
                                'stored', self.map_dir, kind)
                    return
                for stale in self.map_dir.glob('.index_*.tmp-*'):
                    stale.unlink(missing_ok=True)       # of a crashed writer: all hold the lock
                entry = write_file_atomic(self.map_dir, name, data)
                entry.update(file=name, params=params, codes_sha256=self.codes_sha256)
                indexes = {**manifest.indexes, kind: entry}
                write_file_atomic(self.map_dir, MANIFEST,
                                  manifest.with_changes(indexes=indexes).to_json().encode())
        except (OSError, MapError) as exc:
            logger.warning('cannot store the %s index in %s (%s): it is rebuilt at every load',
                           kind, self.map_dir, exc)
            return
        logger.info('stored the %s index of map %s (%d bytes)', kind, self.map_dir, len(data))


def _stat_key(info: os.stat_result) -> list[int]:
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]


def read_array(directory: Path, name: str, entry: dict | None, *, verify: bool | str,
               mmap: bool = False, cache: VerificationCache | None = None) -> np.ndarray:
    """Read ``directory/name`` checked against its manifest ``entry``; any damage raises a
    :class:`MapError` that names the file. ``verify``: True hashes unless ``cache`` vouches
    for the file, ``'full'`` always hashes, False checks size and header only."""
    path = directory / name
    if not path.is_file():
        raise MapError(f'map file missing: {path}')
    if entry is not None:
        size = path.stat().st_size
        if size != entry['bytes']:
            raise MapError(f'map file {path} has {size} bytes, the manifest says '
                           f"{entry['bytes']} (truncated or replaced)")
        if verify:
            _verify_sha256(path, entry['sha256'], None if verify == 'full' else cache)
    try:
        array = np.load(path, allow_pickle=False, mmap_mode='r' if mmap else None)
    except (ValueError, OSError, EOFError) as exc:
        raise MapError(f'map file {path} cannot be read: {exc}') from exc
    if entry is not None and (list(array.shape) != entry['shape']
                              or array.dtype.str != entry['dtype']):
        raise MapError(f"map file {path} holds {array.dtype.str}{list(array.shape)}, the "
                       f"manifest says {entry['dtype']}{entry['shape']}")
    return array


def _verify_sha256(path: Path, expected: str, cache: VerificationCache | None) -> None:
    if cache is not None and cache.vouches(path, expected):
        return
    started_ns = _now_ns()
    if sha256_file(path) != expected:
        raise MapError(f'map file {path} is corrupt: its sha256 differs from the manifest')
    if cache is not None:
        cache.record(path, expected, started_ns)


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
