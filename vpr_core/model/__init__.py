"""Models: the DINOv2 backbone, SelaVPR++ / SuperVLAD / HAM-VPR parts, checkpoints, weights.

- :mod:`~vpr_core.model.config`: :class:`ModelConfig`; :mod:`~vpr_core.model.factory`:
  :func:`build_model` and the named constructors; :mod:`~vpr_core.model.vpr_model`:
  :class:`VPRModel` (backbone -> heads -> optional whitening stage);
- :mod:`~vpr_core.model.checkpoint`: our ``.safetensors`` format (:func:`save_model`,
  :func:`load_model`, :func:`read_metadata`); :mod:`~vpr_core.model.foreign`: official and
  released checkpoints; :mod:`~vpr_core.model.whitening`: the whitening stage and its fit.
"""

from vpr_core.exports import lazy_exports

_EXPORTS = {
    'ModelConfig': 'vpr_core.model.config',
    'build_model': 'vpr_core.model.factory',
    'VPRModel': 'vpr_core.model.vpr_model',
    'default_model_path': 'vpr_core.model.checkpoint',
    'load_model': 'vpr_core.model.checkpoint',
    'save_model': 'vpr_core.model.checkpoint',
    'read_metadata': 'vpr_core.model.checkpoint',
    'load_foundation_weights': 'vpr_core.model.foreign',
    'fit_whitening': 'vpr_core.model.whitening',
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
