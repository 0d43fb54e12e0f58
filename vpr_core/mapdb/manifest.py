"""The map manifest: what built a map, how to read it, and a checksum of every file."""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from vpr_core.errors import MapError

FORMAT_VERSION = 1
FLOAT_DTYPES = ('float32', 'float16')


@dataclass(frozen=True)
class MapManifest:
    """Everything a reader needs to trust a map.

    ``descriptor_dim``: float descriptor width (0 when the map holds codes only);
    ``code_bits``: binary code length (0 when the map holds floats only); ``pose_frame``: the
    frame whose poses are stored (``camera``: the mapping camera, so any robot's extrinsic can
    be applied at query time); ``synthetic_poses``: poses are invented (1 m per index along x)
    because the source had none; ``orientation_source``: ``pose`` (measured), ``track``
    (direction of travel) or ``none`` (unknown); ``planar``: z, roll and pitch are not observed.
    ``indexes``: approximate search indexes stored in the folder, by kind (``ivf``, ``hnsw``):
    file name, its sha256 and bytes, the build parameters and the sha256 of the codes file it
    was built from; they are not map content (not in ``files`` nor ``map_id``).
    """

    model_fingerprint: str
    descriptor_dim: int
    code_bits: int
    num_places: int
    float_dtype: str = 'float32'
    metric: str = 'cosine'
    frame_id: str = 'map'
    pose_frame: str = 'camera'
    synthetic_poses: bool = False
    orientation_source: str = 'pose'
    planar: bool = True
    geo_origin: tuple[float, float, float] | None = None
    preprocess: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    keyframing: dict = field(default_factory=dict)
    created: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    indexes: dict = field(default_factory=dict)
    map_id: str = ''
    format_version: int = FORMAT_VERSION

    def with_changes(self, **changes) -> 'MapManifest':
        """A copy with fields replaced."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """Pretty JSON text of the manifest."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + '\n'


def creation_info(tool: str) -> dict:
    """When and with which package version a map was made."""
    try:
        version = metadata.version('vpr_ros')
    except metadata.PackageNotFoundError:
        version = 'unknown'
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    return {'utc': now, 'tool': tool, 'vpr_ros_version': version}


def map_id_of(files: dict) -> str:
    """Short content id of a map: sha256 over its file checksums."""
    text = '\n'.join(f"{name}:{entry['sha256']}" for name, entry in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_manifest(directory: Path) -> MapManifest:
    """Parse ``directory/manifest.json``; a damaged or newer manifest raises MapError."""
    path = directory / 'manifest.json'
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError as exc:
        raise MapError(f'map manifest missing: {path}') from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MapError(f'map manifest {path} is not valid JSON (truncated?): {exc}') from exc
    if not isinstance(data, dict):
        raise MapError(f'map manifest {path} must hold a JSON object')
    version = data.get('format_version')
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise MapError(f'map manifest {path} has format_version {version!r}; this vpr_core '
                       f'reads versions 1..{FORMAT_VERSION}')
    return _from_dict(data, path)


def _from_dict(data: dict, path: Path) -> MapManifest:
    names = {f.name for f in dataclasses.fields(MapManifest)}
    required = [f.name for f in dataclasses.fields(MapManifest)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise MapError(f"map manifest {path} lacks {', '.join(missing)}")
    known: dict[str, Any] = {k: v for k, v in data.items() if k in names}
    if known.get('geo_origin') is not None:
        known['geo_origin'] = tuple(float(v) for v in known['geo_origin'])
    if known.get('float_dtype', 'float32') not in (*FLOAT_DTYPES, 'none'):
        raise MapError(f"map manifest {path}: float_dtype {known['float_dtype']!r} is not one "
                       f"of {', '.join(FLOAT_DTYPES)}, none")
    return MapManifest(**known)
