"""Offline evaluation: datasets with ground truth, recall@N and PR metrics, exact search
(float, Hamming, Hamming + float re-rank), sequence filtering, the pixel baseline, JSON / CSV /
PNG reports and the ``vpr evaluate`` command."""

from vpr_core.exports import lazy_exports

_EXPORTS = {
    'EvalSet': 'vpr_core.evaluation.datasets',
    'load_index_aligned': 'vpr_core.evaluation.datasets',
    'load_vg_benchmark': 'vpr_core.evaluation.datasets',
    'list_images': 'vpr_core.evaluation.datasets',
    'match_masks': 'vpr_core.evaluation.datasets',
    'parse_utm': 'vpr_core.evaluation.datasets',
    'EvalOptions': 'vpr_core.evaluation.evaluator',
    'extract_timed': 'vpr_core.evaluation.evaluator',
    'LoadedImages': 'vpr_core.evaluation.evaluator',
    'load_images': 'vpr_core.evaluation.evaluator',
    'score_descriptors': 'vpr_core.evaluation.evaluator',
    'evaluate_model': 'vpr_core.evaluation.evaluator',
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
