"""Approximate search indexes kept in the map folder, trusted only as far as the manifest.

``index_<kind>.faissbin`` beside the map's arrays, recorded in the manifest's ``indexes`` with
its parameters, size, sha256 and the sha256 of the codes it was built from; hashed in full
whenever it is read. A stale, damaged or missing one is rebuilt (and stored again).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from vpr_core.errors import MapError
from vpr_core.files import TMP_MARK, write_file_atomic
from vpr_core.mapdb.lock import map_write_lock
from vpr_core.mapdb.manifest import read_manifest
from vpr_core.mapdb.map_dir import MANIFEST

logger = logging.getLogger(__name__)

INDEX_LOCK_TIMEOUT_S = 5.0


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
                for stale in self.map_dir.glob(f'.index_*{TMP_MARK}*'):
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
