"""Maps: keyframe descriptors with poses, built from bags or image folders, searched fast.

- :mod:`~vpr_core.mapdb.database`: :class:`MapDatabase` (storage, atomic save / append,
  search returning :class:`~vpr_core.mapdb.match.PlaceMatch` records);
- :mod:`~vpr_core.mapdb.index`: :class:`SearchConfig`, Hamming / re-rank / float search;
- :mod:`~vpr_core.mapdb.builder`: :func:`build_map` from a frame source and a model;
- :mod:`~vpr_core.mapdb.source`: rosbag2 and image-folder frame sources;
- :mod:`~vpr_core.mapdb.recorder`: teach mode (incremental keyframes appended to a map);
- :mod:`~vpr_core.mapdb.lock`: the advisory lock every map writer holds;
- :mod:`~vpr_core.mapdb.commands`: ``vpr build-map``, ``vpr query``, ``vpr map-info``.
"""

from vpr_core.exports import lazy_exports

_EXPORTS = {
    'BuildConfig': 'vpr_core.mapdb.builder',
    'build_map': 'vpr_core.mapdb.builder',
    'MapDatabase': 'vpr_core.mapdb.database',
    'map_exists': 'vpr_core.mapdb.database',
    'KeyframeConfig': 'vpr_core.mapdb.keyframe',
    'Pose': 'vpr_core.mapdb.pose',
    'rotate_vectors': 'vpr_core.mapdb.pose',
    'geodetic_to_enu': 'vpr_core.mapdb.pose',
    'yaw_from_quaternions': 'vpr_core.mapdb.pose',
    'interpolate_poses': 'vpr_core.mapdb.pose',
    'multiply_quaternions': 'vpr_core.mapdb.pose',
    'MapRecorder': 'vpr_core.mapdb.recorder',
    'BagSource': 'vpr_core.mapdb.source',
    'FrameSource': 'vpr_core.mapdb.source',
    'FrameTable': 'vpr_core.mapdb.source',
    'ImageFolderSource': 'vpr_core.mapdb.source',
    'SearchConfig': 'vpr_core.mapdb.search_config',
    'PlaceMatch': 'vpr_core.mapdb.match',
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
