"""Explicit download of published weight files into a local cache, verified by sha256.

Nothing in vpr_core downloads on its own: a model that needs official weights asks
:func:`ensure_weights`, which only looks in the cache and, when the file is absent, raises a
:class:`WeightsNotFoundError` that says which file to place where. The download itself is the
``vpr download-weights NAME`` command (or :func:`download_weights`).

sha256 values: Meta does not publish checksums for the DINOv2 files. The values below were
computed by third parties from the files served at ``dl.fbaipublicfiles.com`` and agree across
several independent projects (e.g. the refiners DINOv2 conversion table); they are the best
public record there is, not a publisher's signature. The authors' SelaVPR++ release files have
no known checksum: on first download we record the hash next to the file (``NAME.sha256``, the
``sha256sum`` format) and verify it on every later use; ``--sha256`` lets a user pin one.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from vpr_core.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vpr_core.files import atomic_write_path, sha256_file

LOG = logging.getLogger(__name__)

DINOV2_URL_BASE = 'https://dl.fbaipublicfiles.com/dinov2'
SELAVPR_URL_BASE = 'https://github.com/Lu-Feng/SelaVPRplusplus/releases/download/SelaVPR%2B%2B'
CACHE_ENV = 'VPR_CACHE'
_CHUNK = 1 << 20
_THIRD_PARTY = 'third-party record (refiners DINOv2 conversion table and others agree)'


@dataclass(frozen=True)
class WeightsFile:
    """One downloadable weight file: where it lives and how to check it."""

    name: str
    url_base: str
    relative_url: str                   # appended to url_base
    sha256: str | None                  # None: unknown, recorded on first download
    size_bytes: int | None
    sha256_source: str

    @property
    def filename(self) -> str:
        return self.relative_url.rsplit('/', 1)[-1]

    def url(self, url_base: str | None = None) -> str:
        return f'{(url_base or self.url_base).rstrip("/")}/{self.relative_url}'


def _dinov2(arch: str, registers: bool, sha256: str, size_bytes: int) -> WeightsFile:
    name = f'dinov2_vit{arch}14' + ('_reg4' if registers else '')
    return WeightsFile(name, DINOV2_URL_BASE, f'dinov2_vit{arch}14/{name}_pretrain.pth',
                       sha256, size_bytes, _THIRD_PARTY)


def _selavpr(name: str) -> WeightsFile:
    return WeightsFile(name, SELAVPR_URL_BASE, f'{name}.pth', None, None,
                       'unknown: recorded on first download')


OFFICIAL_WEIGHTS: dict[str, WeightsFile] = {w.name: w for w in (
    _dinov2('s', False, 'b938bf1bc15cd2ec0feacfe3a1bb553fe8ea9ca46a7e1d8d00217f29aef60cd9',
            88_283_115),
    _dinov2('s', True, 'f433177089a681826f849f194ece3bb48f4d63fb38d32fc837e3dc7a4e5641fb',
            88_291_785),
    _dinov2('b', False, '0b8b82f85de91b424aded121c7e1dcc2b7bc6d0adeea651bf73a13307fad8c73',
            346_378_731),
    _dinov2('b', True, '73182a088cf94833c94b1666d1c99e02fe87e2007bff57b564fb6206e25dba71',
            346_393_545),
    _dinov2('l', False, 'd5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428',
            1_217_586_395),
    _dinov2('l', True, '36e4deffbaef061a2576705b0c36f93621e2ae20bf6274694821b0b492551b51',
            1_217_607_321),
    _dinov2('g', False, 'baf8467e50af277596bbbafa06887c177ee899ab46033649c383577d7e9309d3',
            4_546_108_579),
    _dinov2('g', True, '746ecb8c6301c645c5c855be91687d274587d6e48fdaec4a729753160b34a283',
            4_546_140_349),
    _selavpr('SelaVPRplusplus_base'),
    _selavpr('SelaVPRplusplus_base_rerank'),
    _selavpr('SelaVPRplusplus_large'),
    _selavpr('SelaVPRplusplus_large_rerank'),
)}


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The weights cache: ``override``, else ``$VPR_CACHE``, else ``~/.cache/vpr_ros``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / '.cache' / 'vpr_ros'


def weights_entry(name: str) -> WeightsFile:
    """Table entry by name (``dinov2_vitb14``) or file name (``dinov2_vitb14_pretrain.pth``)."""
    for entry in OFFICIAL_WEIGHTS.values():
        if name in (entry.name, entry.filename):
            return entry
    raise ConfigError(f'unknown weights {name!r}; valid: {", ".join(OFFICIAL_WEIGHTS)}')


def weights_path(name: str, *, cache: str | os.PathLike | None = None) -> Path:
    """Where the file of ``name`` lives (or would live) in the cache."""
    return cache_dir(cache) / weights_entry(name).filename


def ensure_weights(name: str, *, cache: str | os.PathLike | None = None,
                   sha256: str | None = None) -> Path:
    """Path of the cached, sha256-verified file of ``name``; never touches the network.

    Raises :class:`WeightsNotFoundError` (saying which file to place where) when it is absent
    and :class:`CheckpointError` when its content does not match the expected hash.
    """
    entry = weights_entry(name)
    path = weights_path(name, cache=cache)
    if not path.is_file():
        raise WeightsNotFoundError(_missing_message(entry, path))
    _verify(entry, path, _normalise_sha(sha256))
    return path


def download_weights(name: str, *, cache: str | os.PathLike | None = None,
                     url_base: str | None = None, sha256: str | None = None,
                     progress: bool = True, force: bool = False,
                     timeout_s: float = 30.0) -> Path:
    """Download ``name`` into the cache (temp file, sha256 check, atomic rename); return it.

    A cached file that verifies is kept unless ``force``; one that does not is replaced. A
    download whose hash does not match is deleted and raises :class:`CheckpointError`; an
    unreachable server raises :class:`WeightsNotFoundError` saying where to place the file.
    """
    entry = weights_entry(name)
    expected = _normalise_sha(sha256)
    path = weights_path(name, cache=cache)
    if path.is_file() and not force:
        try:
            _verify(entry, path, expected)
        except CheckpointError as exc:
            LOG.warning('replacing the cached file: %s', exc)
        else:
            LOG.info('%s already in the cache: %s', entry.name, path)
            return path
    path.parent.mkdir(parents=True, exist_ok=True)
    url = entry.url(url_base)
    LOG.info('downloading %s from %s', entry.filename, url)
    with atomic_write_path(path) as tmp:
        digest = _fetch(url, tmp, entry, path, progress, timeout_s)
        _check_digest(entry, digest, expected, url)
    _record_sha(path, digest)
    LOG.info('saved %s (sha256 %s)', path, digest)
    return path


def _fetch(url: str, tmp: Path, entry: WeightsFile, path: Path, progress: bool,
           timeout_s: float) -> str:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get('Content-Length') or 0) or entry.size_bytes
            received = _stream(response, tmp, digest, total, entry.filename, progress)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, 'reason', None) or exc
        raise WeightsNotFoundError(
            f'could not download {url}: {reason}. Offline, download {entry.url()} on another '
            f'machine and place it at {path}{_checksum(entry)}') from exc
    if total and received != total:
        raise CheckpointError(f'download of {url} was cut short: got {received} of {total} '
                              'bytes; run the command again')
    return digest.hexdigest()


def _stream(response, tmp: Path, digest, total: int | None, label: str,
            progress: bool) -> int:
    received = 0
    with open(tmp, 'wb') as out, tqdm(total=total, unit='B', unit_scale=True, desc=label,
                                      disable=not progress) as bar:
        for chunk in iter(lambda: response.read(_CHUNK), b''):
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


def _check_digest(entry: WeightsFile, digest: str, expected: str | None, url: str) -> None:
    want = expected or entry.sha256
    if expected and entry.sha256 and expected != entry.sha256:
        LOG.warning('--sha256 %s overrides the table value %s for %s', expected, entry.sha256,
                    entry.name)
    if want and digest != want:
        origin = _source(entry, expected)
        raise CheckpointError(f'sha256 mismatch for {url}: expected {want} ({origin}), got '
                              f'{digest}; the download was not kept')
    if want is None:
        LOG.warning('no published sha256 for %s; recording %s next to the file and verifying '
                    'it on later use', entry.filename, digest)


def _verify(entry: WeightsFile, path: Path, expected: str | None) -> None:
    recorded = _read_recorded_sha(path)
    want = expected or entry.sha256 or recorded
    digest = sha256_file(path)
    if want is None:
        LOG.warning('%s has no known sha256; recording %s', path, digest)
        _record_sha(path, digest)
        return
    if digest != want:
        origin = _source(entry, expected) if (expected or entry.sha256) else f'{path}.sha256'
        raise CheckpointError(f'{path} has sha256 {digest}, expected {want} ({origin}); '
                              f'delete it and run `vpr download-weights {entry.name}`')
    if recorded != digest:
        _record_sha(path, digest)


def _source(entry: WeightsFile, expected: str | None) -> str:
    return 'given by --sha256' if expected else entry.sha256_source


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + '.sha256')


def _record_sha(path: Path, digest: str) -> None:
    with atomic_write_path(_sidecar(path)) as tmp:
        tmp.write_text(f'{digest}  {path.name}\n')


def _read_recorded_sha(path: Path) -> str | None:
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        return None
    fields = sidecar.read_text().split()
    return fields[0].lower() if fields and _is_sha(fields[0]) else None


def _normalise_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    if not _is_sha(sha256.strip()):
        raise ConfigError(f'sha256 must be 64 hex digits, got {sha256!r}')
    return sha256.strip().lower()


def _is_sha(text: str) -> bool:
    return re.fullmatch(r'[0-9a-fA-F]{64}', text) is not None


def _checksum(entry: WeightsFile) -> str:
    return f' (sha256 {entry.sha256})' if entry.sha256 else ''


def _missing_message(entry: WeightsFile, path: Path) -> str:
    return (f'{entry.filename} is not in the weights cache. Run `vpr download-weights '
            f'{entry.name}`, or, offline, download {entry.url()} on another machine and place '
            f'it at {path}{_checksum(entry)}. The cache is ${CACHE_ENV} or ~/.cache/vpr_ros.')
