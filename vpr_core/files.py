"""Crash-safe files: write beside, fsync, rename over; and the sha256 of a file.

Every file the package writes for keeps (maps' manifests and stored indexes, checkpoints,
downloaded weights, reports, plots, calibrations, training state) goes through
:func:`atomic_write_path`: the content is written to a temporary sibling
``.<name>.tmp-<pid>-<random>``, fsynced, renamed over the target and the directory fsynced,
so a reader sees the old file or the new one, never a part. The temporary file is made with
the process umask (not ``mkstemp``'s 0600, which would stick to a map or a checkpoint that
the node reads as another account) and removed on any failure. A crash between the write
and the rename can leave a temporary file; its owner cleans up by the name pattern
(:data:`TMP_MARK`) under its own lock (the map folders' stored indexes do).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
import secrets
from typing import Iterator

TMP_MARK = '.tmp-'          # temporary files are named .<name>.tmp-<pid>-<random>
_HASH_BLOCK = 1 << 22


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over
    ``path``. On an exception (or an interrupt) the temporary file is removed and ``path``
    is left as it was."""
    path = Path(path)
    tmp = path.with_name(f'.{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(6)}')
    tmp.open('xb').close()          # 'x' honours the umask, unlike mkstemp's 0600
    mode = tmp.stat().st_mode & 0o777
    try:
        yield tmp
        # Some writers (safetensors' save_file) re-create the file as 0600: a map or a
        # checkpoint must stay readable by the account that runs the node.
        os.chmod(tmp, mode)
        with open(tmp, 'rb+') as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_file_atomic(directory: str | os.PathLike, name: str, data: bytes) -> dict:
    """Write ``data`` as ``directory/name`` through :func:`atomic_write_path`; returns the
    file's manifest entry (sha256, bytes)."""
    with atomic_write_path(Path(directory) / name) as tmp:
        tmp.write_bytes(data)
    return {'sha256': hashlib.sha256(data).hexdigest(), 'bytes': len(data)}


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (parents created) through :func:`atomic_write_path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(path) as tmp:
        tmp.write_text(text)


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory, so that renames and new entries in it survive a power cut."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:      # some platforms cannot open directories; the rename still happened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(_HASH_BLOCK), b''):
            digest.update(block)
    return digest.hexdigest()
