"""Which map files this machine has already hashed, and the stat that vouches for them.

A small cache (``$VPR_CACHE/map_verification.json``) records, per absolute path, the sha256
found with the file's size, mtime_ns, ctime_ns, inode and device; a later load whose file
still shows all of them and the manifest's sha256 skips the hash. Any write to a file changes
its ctime (which no ordinary call can set back), so content changed behind the cache's back
is hashed again. A file is recorded only when its ctime lies :data:`RACY_MARGIN_S` before the
hash began, so a write in the same clock tick as the hash cannot hide (git's "racy clean"
rule).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from vpr_core.files import write_file_atomic

logger = logging.getLogger(__name__)

VERIFICATION_FILE = 'map_verification.json'
RACY_MARGIN_S = 2.0
_VERIFICATION_ENTRIES = 4096


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


def _stat_key(info: os.stat_result) -> list[int]:
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]
