"""Geometric verification of place matches and their relative pose (no ROS imports).

- :mod:`~vpr_core.geometry.config`: :class:`VerifyConfig` and the verification reasons
  (cheap: no OpenCV behind it, so loop and node configs can import it);
- :mod:`~vpr_core.geometry.camera`: :class:`CameraModel` (pinhole + plumb_bob);
- :mod:`~vpr_core.geometry.features`: :class:`LocalFeatures`, :func:`extract_features`
  (OpenCV ORB or SIFT);
- :mod:`~vpr_core.geometry.verification`: :func:`verify` -> :class:`Verification` with a
  :class:`~vpr_core.geometry.pose.RelativePose`.

Frames follow REP-103's optical convention (z forward, x right, y down); see docs/geometry.md.
Names resolve lazily so that importing this package does not load OpenCV.
"""
from vpr_core.exports import lazy_exports

_EXPORTS = {
    'VerifyConfig': 'vpr_core.geometry.config',
    'REASONS': 'vpr_core.geometry.config',
    'CameraModel': 'vpr_core.geometry.camera',
    'LocalFeatures': 'vpr_core.geometry.features',
    'extract_features': 'vpr_core.geometry.features',
    'RelativePose': 'vpr_core.geometry.pose',
    'Verification': 'vpr_core.geometry.verification',
    'verify': 'vpr_core.geometry.verification',
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
