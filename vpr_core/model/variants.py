"""Our variants of the published parts, for models trained without pretrained weights.

None of these is in the papers; the bundled Nordland model opts into them through its
:class:`ModelConfig` (what each bought it: ``docs/experiments/``). Published configurations
never use them, so the published modules stay as the papers define them and these are chosen
here, at build time:

- backbone front end (``backbone.stem``, ``backbone.input_norm``, ``backbone.final_norm``): a
  trainable convolutional stem in place of the patch embedding, per-image standardisation in
  front of it, no final LayerNorm (:func:`build_backbone`);
- GeM pooling without the per-location L2 (``head.location_norm``, ``hashing.location_norm``:
  :func:`location_pooling`, :func:`build_float_head`, :func:`build_hashing_head`).

The learned whitening, a stage after the heads, is in :mod:`vpr_core.model.whitening`.
"""
from __future__ import annotations

from torch import nn, Tensor

from vpr_core.errors import ConfigError
from vpr_core.model.aggregators.gem import SelaGeMHead
from vpr_core.model.backbone import DinoVisionTransformer
from vpr_core.model.config import BackboneConfig, HashingConfig, HeadConfig
from vpr_core.model.hashing import HashingHead
from vpr_core.model.layers import Flatten, GeM, gem_pooling, PatchEmbed
from vpr_core.model.registry import Head, HEADS

STEMS = ('patch', 'conv', 'vgg')
INPUT_NORMS = ('none', 'image')


class ImageStandardize(nn.Module):
    """[B, C, H, W] -> the same, each image shifted and scaled to mean 0 and standard deviation
    1 over its pixels and channels (``eps`` keeps a blank frame finite). No parameters."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + self.eps)


class ConvStem(nn.Module):
    """[B, 3, H, W] -> [B, H/p * W/p, D]: log2(p) stages that halve the resolution, then a 1x1
    projection to D. A drop-in for :class:`PatchEmbed` where no pretrained patch embedding
    exists; it trains even when the ViT is frozen. Stage widths double up to D (D/4, D/2, D for
    p = 8).

    ``pooled`` False (stem ``conv``): one 3x3 stride-2 conv-BN-ReLU per stage (Xiao et al.,
    "Early convolutions help transformers see better", NeurIPS 2021). ``pooled`` True (stem
    ``vgg``): ``depth`` stride-1 3x3 conv-BN-ReLU layers at the stage's input resolution, then a
    2x2 max-pool (Simonyan and Zisserman, "Very deep convolutional networks", ICLR 2015), so
    the first layers see every input pixel.
    """

    from_scratch = True     # no pretrained weights: trains even when the ViT is frozen

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3, *,
                 pooled: bool = False, depth: int = 2) -> None:
        super().__init__()
        stages = patch_size.bit_length() - 1
        if patch_size < 2 or patch_size != 1 << stages:
            raise ValueError(f'a conv stem needs a power-of-two patch size, got {patch_size}')
        self.patch_size = patch_size
        widths = [max(embed_dim >> (stages - 1 - i), 8) for i in range(stages)]
        stem, channels = [], in_chans
        for width in widths:
            for _ in range(depth if pooled else 1):
                stem += [nn.Conv2d(channels, width, 3, stride=1 if pooled else 2, padding=1,
                                   bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
            if pooled:
                stem.append(nn.MaxPool2d(2))
        self.stem = nn.Sequential(*stem)
        self.proj = nn.Conv2d(channels, embed_dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


class StandardizedInput(nn.Module):
    """[B, 3, H, W] -> ``embed``'s tokens of the per-image standardised input.

    ``embed``'s children are registered here under their own names and ``standardize`` has no
    parameters, so the state-dict layout is the embedding's (``patch_embed.proj.*`` ...).
    """

    def __init__(self, embed: nn.Module) -> None:
        super().__init__()
        self.standardize = ImageStandardize()
        for name, child in embed.named_children():
            self.add_module(name, child)
        self.__dict__['embed'] = embed      # not registered twice: its children are above
        self.patch_size = embed.patch_size
        self.from_scratch = getattr(embed, 'from_scratch', False)

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(self.standardize(x))


def check_front_end(config: BackboneConfig) -> None:
    """Raise ConfigError for a front end that cannot be built."""
    if config.stem not in STEMS:
        raise ConfigError(f'backbone.stem {config.stem!r} (valid: {", ".join(STEMS)})')
    if config.stem != 'patch' and (config.patch_size < 2
                                   or config.patch_size & (config.patch_size - 1)):
        raise ConfigError(f'backbone.stem {config.stem} needs a power-of-two patch_size, got '
                          f'{config.patch_size}')
    if config.input_norm not in INPUT_NORMS:
        raise ConfigError(f'backbone.input_norm {config.input_norm!r} '
                          f'(valid: {", ".join(INPUT_NORMS)})')
    if config.stem_depth < 1:
        raise ConfigError(f'backbone.stem_depth must be >= 1, got {config.stem_depth}')


def patch_embedding(config: BackboneConfig) -> nn.Module:
    """The front end ``backbone.stem`` and ``backbone.input_norm`` ask for."""
    check_front_end(config)
    if config.stem == 'patch':
        embed = PatchEmbed(config.patch_size, config.embed_dim)
    else:
        embed = ConvStem(config.patch_size, config.embed_dim, pooled=config.stem == 'vgg',
                         depth=config.stem_depth)
    return StandardizedInput(embed) if config.input_norm == 'image' else embed


def build_backbone(config: BackboneConfig) -> DinoVisionTransformer:
    """The DINOv2 ViT with the front end of ``config`` (the official one by default)."""
    return DinoVisionTransformer(config, patch_embed=patch_embedding(config),
                                 norm=None if config.final_norm else nn.Identity())


def location_pooling(location_norm: bool) -> nn.Sequential:
    """The seeds' GeM pooling, or (``location_norm`` False) an Identity in the L2Norm's place
    (same state-dict keys): GeM then pools the head's map as it is, so locations with strong
    responses weigh more, as in HAM-VPR's AMG-GeM."""
    return gem_pooling() if location_norm else nn.Sequential(nn.Identity(), GeM(), Flatten())


def build_float_head(config: HeadConfig, dim: int) -> Head:
    """The registered head ``config.kind`` for tokens of width ``dim``; ``location_norm``
    applies to the GeM head only (the other heads have no per-location L2)."""
    if config.kind == 'gem' and not config.location_norm:
        return SelaGeMHead.from_config(config, dim, pooling=location_pooling(False))
    return HEADS.get(config.kind).from_config(config, dim)


def build_hashing_head(config: HashingConfig, dim: int) -> HashingHead:
    """The SelaVPR++ hashing head, with the pooling ``hashing.location_norm`` asks for."""
    return HashingHead(dim, config.bits, location_pooling(config.location_norm))
