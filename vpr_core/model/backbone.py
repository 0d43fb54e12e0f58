"""DINOv2 vision transformer (Oquab et al., "DINOv2: Learning Robust Visual Features without
Supervision", TMLR 2024), written here with the official parameter names.

An official ``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth`` (flat state dict, un-chunked blocks)
loads into :class:`DinoVisionTransformer` with ``strict=True`` and no renaming. Token order is
CLS, register tokens, patch tokens (row-major over the patch grid). The class builds the official
patch embedding and final LayerNorm; the front-end variants of models trained without
pretrained weights (convolutional stem, per-image standardisation, no final norm) are modules
passed in by :func:`vpr_core.model.variants.build_backbone`.
"""
from __future__ import annotations

import math

import torch
from torch import nn, Tensor
import torch.nn.functional as F

from vpr_core.errors import ConfigError, UnsupportedImageError
from vpr_core.model.config import BackboneConfig
from vpr_core.model.layers import Block, init_linear_trunc_normal, PatchEmbed


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT built from a :class:`BackboneConfig` (head = Identity, LayerNorm eps 1e-6).

    ``patch_embed`` ([B, 3, H, W] -> [B, N, D]) and ``norm`` replace the official patch
    embedding and final LayerNorm when given (None: the official ones).
    """

    def __init__(self, config: BackboneConfig = BackboneConfig(), *,
                 patch_embed: nn.Module | None = None, norm: nn.Module | None = None) -> None:
        super().__init__()
        check_backbone_config(config)
        dim = config.embed_dim
        self.config = config
        self.embed_dim = self.num_features = dim
        self.n_blocks = config.depth
        self.num_heads = config.num_heads
        self.patch_size = config.patch_size
        self.num_register_tokens = config.num_register_tokens
        self.interpolate_offset = config.interpolate_offset
        self.interpolate_antialias = config.interpolate_antialias
        self.patch_embed = (patch_embed if patch_embed is not None else
                            PatchEmbed(config.patch_size, dim))
        num_patches = (config.img_size // config.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.register_tokens = (nn.Parameter(torch.zeros(1, config.num_register_tokens, dim))
                                if config.num_register_tokens else None)
        self.blocks = nn.ModuleList(
            Block(dim, config.num_heads, config.mlp_ratio, config.ffn_layer, config.init_values)
            for _ in range(config.depth))
        self.norm = norm if norm is not None else nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.init_weights()

    @property
    def num_prefix_tokens(self) -> int:
        """CLS + register tokens in front of the patch tokens."""
        return 1 + self.num_register_tokens

    def init_weights(self) -> None:
        """Official init: pos_embed trunc-normal .02, CLS/registers normal 1e-6, timm Linears."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-2.0, b=2.0)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        init_linear_trunc_normal(self)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, cols) of an input; sides must be multiples of the patch size."""
        if height % self.patch_size or width % self.patch_size:
            raise UnsupportedImageError(
                f'input {height}x{width}: both sides must be multiples of {self.patch_size}')
        return height // self.patch_size, width // self.patch_size

    def interpolate_pos_encoding(self, x: Tensor, height: int, width: int) -> Tensor:
        """Positional embeddings [1, 1 + h*w, D] for ``x`` [B, 1 + h*w, D] from [H, W] input.

        As the official code: unchanged when the grid matches and the input is square; else
        bicubic resize of the M x M table, with scale factors ((h + off) / M, (w + off) / M)
        when ``interpolate_offset`` is non-zero and an explicit size (h, w) otherwise.
        """
        previous_dtype = x.dtype
        npatch = x.shape[1] - 1
        n = self.pos_embed.shape[1] - 1
        if npatch == n and height == width:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        class_pos_embed = pos_embed[:, 0]
        patch_pos_embed = pos_embed[:, 1:]
        dim = x.shape[-1]
        rows, cols = height // self.patch_size, width // self.patch_size
        side = int(math.sqrt(n))
        assert n == side * side
        if self.interpolate_offset:
            kwargs = {'scale_factor': (float(rows + self.interpolate_offset) / side,
                                       float(cols + self.interpolate_offset) / side)}
        else:
            kwargs = {'size': (rows, cols)}
        patch_pos_embed = F.interpolate(
            patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2),
            mode='bicubic', antialias=self.interpolate_antialias, **kwargs)
        assert (rows, cols) == tuple(patch_pos_embed.shape[-2:])
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1).to(previous_dtype)

    def prepare_tokens_with_masks(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """[B, 3, H, W] (+ optional [B, N] bool masks) -> tokens [B, 1 + R + N, D]."""
        height, width = x.shape[-2:]
        self.grid_size(height, width)
        x = self.patch_embed(x)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, height, width)
        if self.register_tokens is not None:
            registers = self.register_tokens.expand(x.shape[0], -1, -1)
            x = torch.cat((x[:, :1], registers, x[:, 1:]), dim=1)
        return x

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
        """The official output dict: ``x_norm_clstoken`` [B, D], ``x_norm_regtokens`` [B, R, D],
        ``x_norm_patchtokens`` [B, N, D], ``x_prenorm`` [B, 1 + R + N, D], ``masks``."""
        x = self.prepare_tokens_with_masks(x, masks)
        for block in self.blocks:
            x = block(x)
        x_norm = self.norm(x)
        return {
            'x_norm_clstoken': x_norm[:, 0],
            'x_norm_regtokens': x_norm[:, 1:self.num_register_tokens + 1],
            'x_norm_patchtokens': x_norm[:, self.num_register_tokens + 1:],
            'x_prenorm': x,
            'masks': masks,
        }

    def forward(self, x: Tensor, *, is_training: bool = False) -> Tensor | dict[str, Tensor]:
        """[B, 3, H, W] -> CLS token [B, D] (the dict of :meth:`forward_features` if training)."""
        features = self.forward_features(x)
        if is_training:
            return features
        return self.head(features['x_norm_clstoken'])


def check_backbone_config(config: BackboneConfig) -> None:
    """Raise ConfigError for hyper-parameters the ViT cannot be built with."""
    if config.ffn_layer not in ('mlp', 'swiglufused'):
        raise ConfigError(f"backbone.ffn_layer {config.ffn_layer!r} (valid: mlp, swiglufused)")
    if config.embed_dim <= 0 or config.num_heads <= 0 or config.embed_dim % config.num_heads:
        raise ConfigError(f'backbone.embed_dim {config.embed_dim} must be a positive multiple '
                          f'of num_heads {config.num_heads}')
    if config.depth <= 0 or config.patch_size <= 0 or config.img_size % config.patch_size:
        raise ConfigError(f'backbone: depth {config.depth} must be > 0 and img_size '
                          f'{config.img_size} a multiple of patch_size {config.patch_size}')
    if config.num_register_tokens < 0:
        raise ConfigError('backbone.num_register_tokens must be >= 0')
    if config.train_blocks_from is not None and not 0 <= config.train_blocks_from <= config.depth:
        raise ConfigError(f'backbone.train_blocks_from {config.train_blocks_from} must be in '
                          f'[0, {config.depth}] or null (whole ViT frozen)')


def freeze_backbone(backbone: DinoVisionTransformer, train_blocks_from: int | None) -> None:
    """Freeze every ViT parameter except blocks with index >= ``train_blocks_from``.

    Patch embedding, CLS/register/mask tokens, pos_embed and the final LayerNorm stay frozen
    (SuperVLAD ``--freeze_te``). Parameters whose name contains ``adapter`` are left alone, and
    so is a patch embedding that has no pretrained weights to keep (``from_scratch`` True,
    e.g. our convolutional stems).
    """
    keep_embed = getattr(backbone.patch_embed, 'from_scratch', False)
    for name, param in backbone.named_parameters():
        if 'adapter' in name or (keep_embed and name.startswith('patch_embed.')):
            continue
        trainable = False
        if train_blocks_from is not None and name.startswith('blocks.'):
            trainable = int(name.split('.')[1]) >= train_blocks_from
        param.requires_grad_(trainable)
