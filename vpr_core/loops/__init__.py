"""Loop closure in the live session (no ROS imports): keyframes, search, consistency, verification.

- :mod:`~vpr_core.loops.config`: :class:`LoopConfig`;
- :mod:`~vpr_core.loops.detector`: :class:`LoopDetector`, :class:`LoopClosure`,
  :class:`LoopResult` (the node's SLAM mode and ``vpr loops`` run it frame by frame);
- :mod:`~vpr_core.loops.session`: :func:`write_session` (a detector's snapshot to a map
  folder, with its local features) and how sessions combine;
- :mod:`~vpr_core.loops.store`: the growing keyframe database and its prefix search;
- :mod:`~vpr_core.loops.consistency`: temporal consistency of candidates;
- :mod:`~vpr_core.loops.features`: local features kept in a saved map's folder;
- :mod:`~vpr_core.loops.truth`, :mod:`~vpr_core.loops.report`,
  :mod:`~vpr_core.loops.commands`: ``vpr loops`` (ground truth, outputs, the command).
"""

from vpr_core.exports import lazy_exports

_EXPORTS = {
    'LoopConfig': 'vpr_core.loops.config',
    'LoopDetector': 'vpr_core.loops.detector',
    'LoopClosure': 'vpr_core.loops.result',
    'LoopResult': 'vpr_core.loops.result',
    'write_session': 'vpr_core.loops.session',
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
