"""The training configuration: one frozen dataclass tree, loaded by ``vpr_core.config``.

A recipe (``config/train/<recipe>.yaml``) fills it; ``--set key.path=value`` overrides it; the
resolved tree is written next to the run's results. Stages:

- ``float``: SelaVPR++ stage 1 (float adapters + float head), MS loss on x_g;
- ``hashing``: single-branch hashing model (hashing adapters + hashing head), hashing loss;
- ``rerank``: SelaVPR++ stage 2: start from a trained float model (``init_from``), copy its float
  adapters into the hashing stream and train only the hashing branch, hashing loss;
- ``supervlad``: SuperVLAD (k-means initialised assignment, blocks below ``train_blocks_from``
  frozen), MS loss;
- ``ham_adapters`` / ``ham_mask``: HAM-VPR stage 1 (adapters + head) and stage 2 (mask head and
  AMG-GeM on the frozen adapted backbone, MS loss + mask supervision);
- ``whiten``: no gradient steps: fit the learned whitening of a trained model's float
  descriptor on the training places (``training.whiten``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vpr_core.model import ModelConfig

Stage = Literal['float', 'hashing', 'rerank', 'supervlad', 'ham_adapters', 'ham_mask',
                'whiten']


@dataclass(frozen=True)
class DataConfig:
    """Training images. ``kind``: ``gsv_cities`` | ``sequence`` | ``city_mask``.

    ``sequence``: ``root/<traversal>/`` folders, index-aligned (sorted names give the index);
    frames within ``place_radius_frames`` of a place's centre frame belong to the place;
    frames in ``exclude_ranges`` ((start, stop) pairs, e.g. validation stretches and a margin)
    are neither places nor neighbours.
    ``city_mask``: VPR-City-Mask ``root/images/<split>/{database,queries}[_mask]``; places are
    groups of images within ``place_radius_m`` of each other (UTM in the file names).
    """

    kind: Literal['gsv_cities', 'sequence', 'city_mask'] = 'gsv_cities'
    root: str = ''
    cities: tuple[str, ...] = ()
    min_images_per_place: int = 4
    traversals: tuple[str, ...] = ('summer', 'winter')
    index_range: tuple[int, int] | None = None
    exclude_ranges: tuple[tuple[int, int], ...] = ()
    place_radius_frames: int = 0
    split: str = 'train'
    place_radius_m: float = 10.0
    cache_images: bool = False
    workers: int = 0


@dataclass(frozen=True)
class SamplerConfig:
    """Place-major batches: ``places_per_batch`` (P) places x ``images_per_place`` (K) images.

    ``shuffle`` False walks places in dataset order every epoch (the seeds' GSV-Cities setting).
    ``block_frames`` > 0 (sequences): shuffle the route in blocks of that many frames, so a
    batch draws its places from a few stretches of route (harder negatives, like the
    GSV-Cities single-city batches).
    ``proxy_group`` > 0: from the second epoch, batches are neighbourhoods of that many
    places that the model of the previous epoch finds alike (GPM proxy mining, see
    ``training.sampler``).
    """

    places_per_batch: int = 120
    images_per_place: int = 4
    shuffle: bool = False
    block_frames: int = 0
    proxy_group: int = 0


@dataclass(frozen=True)
class AugmentConfig:
    """``randaugment`` (torchvision-style, ``num_ops`` at ``magnitude`` of 31 bins) or
    ``photometric`` (brightness / contrast jitter and a random shift of up to ``shift``
    of the image size), or ``none``. ``place_flip``: the probability that a place's images
    in a batch are all mirrored left to right before augmentation, which makes a new,
    plausible place of it (a mirror image of one view would be a wrong positive); ours, not
    the seeds'."""

    kind: Literal['none', 'randaugment', 'photometric'] = 'randaugment'
    num_ops: int = 3
    magnitude: int = 9
    brightness: float = 0.4
    contrast: float = 0.4
    shift: float = 0.1
    place_flip: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    """Adam (no weight decay in the seeds) with a per-iteration step schedule.

    The learning rate is multiplied by ``gamma`` every ``step_epochs`` epochs' worth of steps.
    ``encoder_lr``: separate learning rate of the SuperVLAD cross-image encoder (None: ``lr``).
    """

    lr: float = 4e-4
    weight_decay: float = 0.0
    step_epochs: float = 3.0
    gamma: float = 0.5
    encoder_lr: float | None = None
    grad_clip: float | None = None


@dataclass(frozen=True)
class LossConfig:
    """Multi-similarity loss and miner (alpha, beta, base, epsilon), hashing term weight,
    HAM-VPR mask term weight. ``normalize``: cosine similarity in the loss (library default)."""

    alpha: float = 1.0
    beta: float = 50.0
    base: float = 0.0
    epsilon: float = 0.1
    normalize: bool = True
    hash_weight: float = 0.1
    mask_weight: float = 1.0


@dataclass(frozen=True)
class ValidationConfig:
    """Validation for model selection; never point it at a test split.

    ``sequence``: ``root/<database>`` vs ``root/<queries>`` over ``index_range`` with
    ``tolerance`` frames (``database_range``: a wider database slice, e.g. all training frames,
    so the search is as hard as on the test part; ``query_ranges``: several (start, stop)
    stretches of queries instead of ``index_range``, all against ``database_range``);
    ``vg_benchmark``: ``root/images/<split>`` with ``radius_m``.
    ``metric``: the selection score (``r1`` or ``r1+r5``); ``patience`` epochs without
    improvement stop the run (0: never stop early).
    """

    kind: Literal['none', 'sequence', 'vg_benchmark'] = 'none'
    root: str = ''
    database: str = 'summer'
    queries: str = 'winter'
    index_range: tuple[int, int] | None = None
    query_ranges: tuple[tuple[int, int], ...] = ()
    database_range: tuple[int, int] | None = None
    tolerance: int = 1
    split: str = 'val'
    radius_m: float = 25.0
    every_epochs: int = 1
    metric: Literal['r1', 'r1+r5'] = 'r1+r5'
    mode: Literal['float', 'hash', 'rerank'] = 'float'
    patience: int = 0
    batch_size: int = 64


@dataclass(frozen=True)
class KMeansConfig:
    """SuperVLAD assignment initialisation: ``descriptors_per_image`` random patch tokens of
    ``images`` training images, ``iterations`` of k-means on K + G centroids."""

    images: int = 5000
    descriptors_per_image: int = 100
    iterations: int = 100


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``foundation_weights``: an official DINOv2 ``.pth`` for the backbone
    (the seeds always start from one); ``init_from``: one of our checkpoints whose matching
    tensors initialise the model. ``steps_per_epoch`` None: one pass over the places per epoch.
    ``trainable``: regular expressions over parameter names (empty: the stage's default).
    ``adapter_init``: ``seeds`` keeps the published adapter init (every adapter conv weight and
    bias = 1e-5: all filters of a branch start identical and only the adapter's inner residual
    pulls them apart); ``kaiming`` re-draws adapter convs with PyTorch's default init, so
    filters differ from the first step (meant for backbones without pretrained weights). Not
    applied when starting from ``init_from``.
    ``time_limit_min``: stop after this many minutes (best checkpoint kept).
    ``whitening_shrinkage``: stage ``whiten``'s weight of the identity in the within-place
    covariance."""

    model: ModelConfig = field(default_factory=ModelConfig)
    stage: Stage = 'float'
    foundation_weights: str | None = None
    init_from: str | None = None
    trainable: tuple[str, ...] = ()
    adapter_init: Literal['seeds', 'kaiming'] = 'seeds'
    freeze_bn_stats: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    epochs: int = 25
    steps_per_epoch: int | None = None
    seed: int = 0
    threads: int | None = None
    device: str = 'auto'
    amp: bool = True
    grad_checkpoint: bool = False
    out_dir: str = 'runs'
    run_name: str | None = None
    time_limit_min: float | None = None
    log_every: int = 10
    whitening_shrinkage: float = 0.1
