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

The parts, one idea each: :mod:`vpr_core.files` (atomic files), :mod:`~vpr_core.mapdb.map_dir`
(atomic map directories, crash backups, stale temporaries), :mod:`~vpr_core.mapdb.arrays`
(array files and their checks), :mod:`~vpr_core.mapdb.verification` (the verification cache)
and :mod:`~vpr_core.mapdb.stored_indexes`. This module gathers their public names.
"""
from __future__ import annotations

from vpr_core.files import write_file_atomic
from vpr_core.mapdb.arrays import read_array, write_array, write_text
from vpr_core.mapdb.map_dir import (MANIFEST, remove_stale_temporaries, resolve_map_dir,
                                    STALE_TMP_AGE_S, write_map_dir)
from vpr_core.mapdb.stored_indexes import INDEX_LOCK_TIMEOUT_S, StoredIndexes
from vpr_core.mapdb.verification import RACY_MARGIN_S, VERIFICATION_FILE, VerificationCache

__all__ = ['INDEX_LOCK_TIMEOUT_S', 'MANIFEST', 'RACY_MARGIN_S', 'STALE_TMP_AGE_S',
           'StoredIndexes', 'VERIFICATION_FILE', 'VerificationCache', 'read_array',
           'remove_stale_temporaries', 'resolve_map_dir', 'write_array',
           'write_file_atomic', 'write_map_dir', 'write_text']
