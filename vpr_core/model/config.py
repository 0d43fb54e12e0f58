"""Typed description of a VPR model: backbone, adapters, heads, hashing and preprocessing.

A :class:`ModelConfig` is the whole architecture. It travels inside every checkpoint we write,
so inference never re-types it. Presets for the published systems live in ``factory.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneConfig:
    """DINOv2 vision transformer hyper-parameters (official names and defaults).

    ``stem``, ``stem_depth``, ``input_norm`` and ``final_norm`` choose our front-end variants
    (:func:`vpr_core.model.variants.build_backbone`); the defaults are the official ViT.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    ffn_layer: Literal['mlp', 'swiglufused'] = 'mlp'
    patch_size: int = 14
    img_size: int = 518
    num_register_tokens: int = 0
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    init_values: float = 1.0
    # 'patch': the official stride-p linear patch embedding; 'conv' (stride-2 convs) or 'vgg'
    # (stem_depth stride-1 convs and a max-pool per stage): a trainable convolutional stem
    # (power-of-two patch size) for backbones trained without pretrained weights.
    stem: Literal['patch', 'conv', 'vgg'] = 'patch'
    stem_depth: int = 2
    # 'image': every image is standardised to zero mean and unit standard deviation (over
    # its pixels and channels) before the stem, so global exposure and contrast, which differ
    # most between seasons and times of day, never reach the network. 'none': as published.
    input_norm: Literal['none', 'image'] = 'none'
    # False: the heads read the tokens before the final LayerNorm (DINOv2's ``x_prenorm``) and
    # the backbone has no ``norm`` weights. A frozen, randomly initialised LayerNorm (unit gain,
    # zero bias) only re-standardises every token, which discards the token's magnitude that
    # GeM pooling would otherwise use to weight locations. True: as published.
    final_norm: bool = True
    # Blocks with index >= this are trainable; None keeps the whole ViT frozen (SelaVPR++,
    # HAM-VPR). SuperVLAD trains blocks 8..11 of ViT-B (``train_blocks_from=8``).
    train_blocks_from: int | None = None


@dataclass(frozen=True)
class AdapterConfig:
    """Adapters on the frozen ViT.

    ``mulconv``: SelaVPR++ side network of MulConvAdapters; ``first_block`` is the index of the
    first block whose output feeds an adapter (None: 0 for depth <= 12, depth - 16 otherwise).
    ``serial_parallel``: SelaVPR/HAM-VPR adapter pair inside the last ``last_blocks`` blocks;
    ``unused_norms`` adds the two LayerNorms HAM-VPR declares per adapter but never applies (they
    exist only so its checkpoints load). ``trainable`` False freezes the adapters (HAM-VPR runs
    its adapted backbone under no_grad, so only its mask head and AMG-GeM train).
    """

    kind: Literal['none', 'mulconv', 'serial_parallel'] = 'none'
    first_block: int | None = None
    last_blocks: int = 6
    bottleneck_ratio: float = 0.5
    parallel_scale: float = 0.2
    unused_norms: bool = False
    trainable: bool = True


@dataclass(frozen=True)
class HeadConfig:
    """Aggregation head producing the float global descriptor (``cls``: plain DINOv2 CLS token)."""

    kind: Literal['gem', 'boq', 'salad', 'supervlad', 'amg_gem', 'cls'] = 'gem'
    out_dim: int | None = None          # gem: Linear2 output (None: 2048 for D<=768 else 4096)
    # gem: L2 over channels at every location before GeM, as published. False pools Linear1's
    # output directly (GeM's clamp keeps its positive part), so locations with strong
    # responses weigh more, as in HAM-VPR's AMG-GeM.
    location_norm: bool = True
    # SuperVLAD
    clusters: int = 4
    ghost_clusters: int = 1
    crossimage_encoder: bool = False
    # BoQ
    boq_proj_channels: int = 384
    boq_num_queries: int = 64
    boq_num_layers: int = 2
    boq_row_dim: int = 32
    # SALAD
    salad_clusters: int = 64
    salad_cluster_dim: int = 128
    salad_token_dim: int = 256
    salad_dropout: float = 0.3
    # HAM-VPR attention-mask head
    mask_channels: int = 256


@dataclass(frozen=True)
class HashingConfig:
    """Deep hashing branch (SelaVPR++). ``bits`` = 0 disables it.

    ``rerank`` True gives the two-branch model (binary codes + float re-rank descriptor);
    ``bits`` > 0 with ``rerank`` False gives the single-branch hashing model.
    """

    bits: int = 0
    rerank: bool = True
    # L2 over channels at every location before the hashing GeM, as published; False as
    # ``HeadConfig.location_norm``.
    location_norm: bool = True


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are fed: ImageNet-normalise first, then resize the tensor (aspect not kept)."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    train_size: tuple[int, int] = (224, 224)    # (height, width)
    test_size: tuple[int, int] = (322, 322)
    antialias: bool = False
    # Cross-image encoders make a descriptor depend on its batch. The papers' protocol feeds
    # consecutive groups of this many images (the last group shorter); the Extractor uses it
    # only with crossimage_policy='fixed_batch' (default 'single': one image per sequence).
    infer_batch_size: int = 8


@dataclass(frozen=True)
class ModelConfig:
    """The complete architecture of a VPR model."""

    name: str = 'custom'
    system: Literal['selavpr++', 'supervlad', 'ham-vpr', 'dinov2', 'custom'] = 'custom'
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    hashing: HashingConfig = field(default_factory=HashingConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    # A learned whitening of the float descriptor (``whiten``: Linear -> out_dim, then L2),
    # fitted in closed form by the training stage ``whiten``; identity until fitted. A stage
    # after the heads (``vpr_core.model.whitening.Whitening``).
    whitening: bool = False
    # What it whitens: the float head's descriptor (``float``: Linear out_dim -> out_dim), or,
    # in a two-branch model, that descriptor beside the hashing branch's continuous code z,
    # each unit-norm (``float+hash``: Linear out_dim + bits -> out_dim), so the re-rank
    # descriptor draws on both streams. Ours, not the seeds'.
    whitening_input: Literal['float', 'float+hash'] = 'float'
    # Vertical strips of the token grid that join the whitening input (0: none): each stream
    # it reads also pools its head's map over ``whitening_strips`` bands of token columns
    # (equal when they divide the grid width; the head's own pooling and last Linear, then
    # L2), so the whitened descriptor keeps where things are across the view, not only what
    # is there (regional pooling, as R-MAC's regions). Needs the GeM float head. Ours, not
    # the seeds'.
    whitening_strips: int = 0

    def with_changes(self, **changes) -> 'ModelConfig':
        """Return a copy with top-level fields replaced."""
        return replace(self, **changes)
