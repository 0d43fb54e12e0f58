"""torch.hub entry points: ``torch.hub.load(<checkout>, 'SelaVPRplusplus', source='local', ...)``.

Keyword arguments follow the seeds' own hub (SelaVPR++: ``backbone``, ``aggregation``,
``hashing``, ``rerank``, ``resume``, ``foundation_model_path``) and the official DINOv2 hub
(``dinov2_vitb14(pretrained=True)``), so existing code ports by changing the repository
argument. Nothing downloads here: released or official weights come from the weights cache
(``vpr download-weights NAME``; ``$VPR_CACHE`` or ``~/.cache/vpr_ros``) or from an explicit
path, and a missing file raises an error naming the file and where to put it.

Differences from the seeds' hub: the model is returned bare (no ``DataParallel``), so its
state-dict keys carry no ``module.`` prefix; ``forward`` returns the same tensors.
"""
import logging

import vpr_core
from vpr_core.errors import ConfigError
from vpr_core.model.weights import ensure_weights

dependencies = ['torch']

_LOG = logging.getLogger(__name__)
_OFFICIAL_WEIGHT_TAGS = ('LVD142M',)     # the official hub's ``weights=`` enum value


def SelaVPRplusplus(*, backbone: str = 'dinov2-large', aggregation: str = 'gem',
                    hashing: bool = True, rerank: bool = True, resume: bool = True,
                    foundation_model_path: str | None = None, weights: str | None = None,
                    cache_dir: str | None = None, **kwargs):
    """SelaVPR++ (T-PAMI 2025); ``resume=True`` loads the authors' released checkpoint.

    Released files: ``SelaVPRplusplus_{base,large}.pth`` (float, ``hashing=False``) and
    ``..._rerank.pth`` (two-branch). ``weights`` overrides the cache with a path (theirs or
    ours); ``resume=False`` starts from ``foundation_model_path`` (official DINOv2 ``.pth``).
    """
    _ignore(kwargs)
    if resume and weights is None:
        weights = _released_selavpr(backbone, aggregation, hashing, rerank, cache_dir)
    return vpr_core.selavpr_plusplus(
        backbone=backbone, aggregation=aggregation, hashing=hashing, rerank=rerank,
        weights=weights, foundation_weights=None if resume else foundation_model_path)


def SuperVLAD(*, backbone: str = 'dinov2-base', clusters: int = 4, ghost_clusters: int = 1,
              crossimage_encoder: bool = True, weights: str | None = None,
              foundation_model_path: str | None = None, **kwargs):
    """SuperVLAD (NeurIPS 2024). The authors publish no hub; ``weights`` is a path to their
    checkpoint (Google Drive) or ours. ``supervlad_clusters`` is accepted as in their parser."""
    clusters = kwargs.pop('supervlad_clusters', clusters)
    _ignore(kwargs)
    return vpr_core.supervlad(backbone=backbone, clusters=clusters,
                              ghost_clusters=ghost_clusters,
                              crossimage_encoder=crossimage_encoder, weights=weights,
                              foundation_weights=foundation_model_path)


def HAMVPR(*, weights: str | None = None, foundation_model_path: str | None = None, **kwargs):
    """HAM-VPR (ViT-L, 224 x 224). No weights are published; ``weights`` is a path."""
    _ignore(kwargs)
    return vpr_core.ham_vpr(weights=weights, foundation_weights=foundation_model_path)


def _dinov2_entry(size: str, registers: bool):
    name = f'dinov2_vit{size[0]}14' + ('_reg4' if registers else '')

    def entry(*, pretrained: bool = True, weights: str | None = None,
              cache_dir: str | None = None, **kwargs):
        _ignore(kwargs)
        if str(getattr(weights, 'value', weights)) in _OFFICIAL_WEIGHT_TAGS:
            weights = None
        if pretrained and weights is None:
            weights = ensure_weights(name, cache=cache_dir)
        return vpr_core.dinov2(size=size, registers=registers, weights=weights).backbone

    entry.__name__ = name.replace('_reg4', '_reg')
    variant = ' with 4 registers' if registers else ''
    entry.__doc__ = (f'Official DINOv2 ViT-{size[0].upper()}/14{variant} as the hub entry '
                     f'``{entry.__name__}`` of facebookresearch/dinov2; ``pretrained`` weights '
                     f'come from ``vpr download-weights {name}`` (cache) or ``weights=PATH``.')
    return entry


dinov2_vits14 = _dinov2_entry('small', False)
dinov2_vitb14 = _dinov2_entry('base', False)
dinov2_vitl14 = _dinov2_entry('large', False)
dinov2_vitg14 = _dinov2_entry('giant', False)
dinov2_vits14_reg = _dinov2_entry('small', True)
dinov2_vitb14_reg = _dinov2_entry('base', True)
dinov2_vitl14_reg = _dinov2_entry('large', True)
dinov2_vitg14_reg = _dinov2_entry('giant', True)


def _released_selavpr(backbone: str, aggregation: str, hashing: bool, rerank: bool,
                      cache_dir: str | None) -> str:
    sizes = {'dinov2-base': 'base', 'dinov2-large': 'large'}
    if backbone not in sizes or aggregation != 'gem' or (hashing and not rerank):
        raise ConfigError(
            f'no released SelaVPR++ checkpoint for backbone={backbone!r}, '
            f'aggregation={aggregation!r}, hashing={hashing}, rerank={rerank} (released: '
            "dinov2-base / dinov2-large with aggregation='gem', hashing=False or "
            'hashing=rerank=True); pass weights=PATH or resume=False')
    name = f'SelaVPRplusplus_{sizes[backbone]}' + ('_rerank' if hashing else '')
    return str(ensure_weights(name, cache=cache_dir))


def _ignore(kwargs: dict) -> None:
    if kwargs:
        _LOG.warning('ignoring hub arguments %s (the seeds stored them on their args '
                     'namespace; they do not change the model)', ', '.join(sorted(kwargs)))
