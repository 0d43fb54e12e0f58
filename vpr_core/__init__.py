"""vpr_core: visual place recognition without ROS.

Public API (resolved lazily, so ``import vpr_core`` stays cheap):

- models: :func:`dinov2`, :func:`selavpr_plusplus`, :func:`supervlad`, :func:`ham_vpr`,
  :func:`build_model`, :func:`load_model`, :class:`ModelConfig`;
- descriptors: :class:`Extractor`, :func:`describe`, :class:`Descriptors`;
- maps and localization: :class:`MapDatabase`, :func:`build_map`, :class:`PlaceRecognizer`.
"""
from vpr_core.exports import lazy_exports

_EXPORTS = {
    'ModelConfig': 'vpr_core.model.config',
    'build_model': 'vpr_core.model.factory',
    'dinov2': 'vpr_core.model.factory',
    'selavpr_plusplus': 'vpr_core.model.factory',
    'supervlad': 'vpr_core.model.factory',
    'ham_vpr': 'vpr_core.model.factory',
    'from_weights': 'vpr_core.model.factory',
    'load_model': 'vpr_core.model.checkpoint',
    'save_model': 'vpr_core.model.checkpoint',
    'read_metadata': 'vpr_core.model.checkpoint',
    'default_model_path': 'vpr_core.model.checkpoint',
    'download_weights': 'vpr_core.model.weights',
    'ensure_weights': 'vpr_core.model.weights',
    'export_onnx': 'vpr_core.model.export',
    'select_device': 'vpr_core.devices',
    'Descriptors': 'vpr_core.descriptors',
    'Extractor': 'vpr_core.extractor',
    'describe': 'vpr_core.extractor',
    'MapDatabase': 'vpr_core.mapdb.database',
    'SearchConfig': 'vpr_core.mapdb.database',
    'build_map': 'vpr_core.mapdb.builder',
    'BuildConfig': 'vpr_core.mapdb.builder',
    'MapRecorder': 'vpr_core.mapdb.recorder',
    'PixelDescriptors': 'vpr_core.mapdb.pixel',
    'PlaceRecognizer': 'vpr_core.localization.recognizer',
    'LocalizationConfig': 'vpr_core.localization.config',
    'LocalizationResult': 'vpr_core.localization.recognizer',
    'sequence_match': 'vpr_core.localization.sequence',
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
