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
