"""Adapters on the frozen DINOv2 ViT, found by name in :data:`ADAPTERS`.

``mulconv``: the side network of MulConvAdapters from SelaVPR++ (Lu et al., "SelaVPR++: Towards
Seamless Adaptation of Foundation Models for Efficient Place Recognition", T-PAMI 2025). The
frozen ViT runs unchanged; a residual stream y starts at the input of block ``first_block`` and
after every later block k becomes y + A(y + x_k). One stream per branch: ``adapters`` (float)
and ``adapters_hashing`` (binary), both reading the same frozen x_k.

``serial_parallel``: the adapter pair of SelaVPR (Lu et al., "Towards Seamless Adaptation of
Pre-trained Models for Visual Place Recognition", ICLR 2024), used by HAM-VPR on its last six
blocks: ``adapter1`` after attention with a skip, ``adapter2`` beside the MLP scaled by 0.2.
"""
from __future__ import annotations

import torch
from torch import nn, Tensor

from vpr_core.errors import ConfigError
from vpr_core.model.backbone import DinoVisionTransformer
from vpr_core.model.config import AdapterConfig
from vpr_core.model.layers import init_linear_trunc_normal
from vpr_core.model.registry import Registry

STACK_NAMES = {'float': 'adapters', 'hash': 'adapters_hashing'}


class BasicConv2d(nn.Module):
    """Conv2d (bias) -> BatchNorm2d (eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


def mulconv_widths(dim: int, ratio: float = 0.5) -> tuple[int, int, int, int, int, int]:
    """(C, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5) for a D-wide ViT.

    C = D * ratio split 1/2, 1/4, 1/4 (the 5x5 branch takes any remainder) with reductions of
    C / 16: (384, 192, 24, 96, 24, 96) for ViT-B and (512, 256, 32, 128, 32, 128) for ViT-L, as
    in SelaVPR++; other widths follow the same fractions.
    """
    hidden = int(dim * ratio)
    ch1x1, ch3x3 = hidden // 2, hidden // 4
    reduced = max(1, hidden // 16)
    return hidden, ch1x1, reduced, ch3x3, reduced, hidden - ch1x1 - ch3x3


class MulConvAdapter(nn.Module):
    """Linear D->C, ReLU, three Inception branches on the patch grid, Linear C->D.

    The prefix tokens (CLS, registers) bypass the convolutions, then u is added to every token
    (so the CLS entry becomes 2 u_cls). No outer skip: the caller adds the output to y.
    """

    def __init__(self, dim: int, ratio: float = 0.5) -> None:
        super().__init__()
        hidden, ch1x1, red3, ch3x3, red5, ch5x5 = mulconv_widths(dim, ratio)
        self.D_fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.branch1 = BasicConv2d(hidden, ch1x1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(hidden, red3, 1), BasicConv2d(red3, ch3x3, 3))
        self.branch3 = nn.Sequential(BasicConv2d(hidden, red5, 1), BasicConv2d(red5, ch5x5, 5))
        self.D_fc2 = nn.Linear(hidden, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """SelaVPR++ init: D_fc1 trunc-normal .02, D_fc2 = 0, every conv weight = bias = 1e-5."""
        init_linear_trunc_normal(self.D_fc1)
        nn.init.zeros_(self.D_fc2.weight)
        nn.init.zeros_(self.D_fc2.bias)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.constant_(module.weight, 1e-5)
                nn.init.constant_(module.bias, 1e-5)

    def forward(self, x: Tensor, grid: tuple[int, int], num_prefix: int) -> Tensor:
        """[B, num_prefix + h*w, D] -> [B, num_prefix + h*w, D]."""
        u = self.act(self.D_fc1(x))
        prefix, patch = u[:, :num_prefix], u[:, num_prefix:]
        mixed = self.mix(patch, grid)
        # = cat(prefix, mixed) + u, written per part (same additions, one copy fewer).
        return self.D_fc2(torch.cat((prefix + prefix, mixed + patch), dim=1))

    def mix(self, patch: Tensor, grid: tuple[int, int]) -> Tensor:
        """The three branches on the patch grid: [B, h*w, C] -> [B, h*w, C]."""
        b, n, c = patch.shape
        feature_map = patch.reshape(b, grid[0], grid[1], c).permute(0, 3, 1, 2)
        mixed = (self.branch1(feature_map), self.branch2(feature_map), self.branch3(feature_map))
        return torch.cat(mixed, dim=1).permute(0, 2, 3, 1).reshape(b, n, c)


class SideAdapters(nn.ModuleList):
    """One adapter stream: MulConvAdapters for blocks ``first_block`` .. depth - 1."""

    def __init__(self, dim: int, depth: int, first_block: int, ratio: float) -> None:
        super().__init__(MulConvAdapter(dim, ratio) for _ in range(depth - first_block))
        self.first_block = first_block


class BottleneckAdapter(nn.Module):
    """SelaVPR adapter: D_fc1 D->D*ratio, ReLU, D_fc2 back to D, optional identity skip.

    ``unused_norms`` declares HAM-VPR's LayerNorms (hidden and D wide, eps 1e-6), which its
    forward never applies. Init: D_fc1 trunc-normal .02, D_fc2 = 0.
    """

    def __init__(self, dim: int, ratio: float, skip: bool, unused_norms: bool = False) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.skip = skip
        self.act = nn.ReLU()
        self.D_fc1 = nn.Linear(dim, hidden)
        self.D_fc2 = nn.Linear(hidden, dim)
        if unused_norms:
            self.norm1 = nn.LayerNorm(hidden, eps=1e-6)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        init_linear_trunc_normal(self.D_fc1)
        nn.init.zeros_(self.D_fc2.weight)
        nn.init.zeros_(self.D_fc2.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.D_fc2(self.act(self.D_fc1(x)))
        return x + out if self.skip else out


class AdapterKind:
    """How one adapter kind attaches to the ViT and runs it. Default: no adapters."""

    def attach(self, backbone: DinoVisionTransformer, config: AdapterConfig,
               streams: tuple[str, ...]) -> None:
        """Add this kind's modules to ``backbone`` for the branches in ``streams``."""

    def run(self, backbone: DinoVisionTransformer, images: Tensor,
            streams: tuple[str, ...]) -> dict[str, Tensor]:
        """[B, 3, H, W] -> {stream: pre-norm tokens [B, 1 + R + N, D]}."""
        x = backbone.prepare_tokens_with_masks(images)
        for block in backbone.blocks:
            x = block(x)
        return {stream: x for stream in streams}


ADAPTERS: Registry[AdapterKind] = Registry('adapter kind')
ADAPTERS.register('none')(AdapterKind())


class MulConvSideNetwork(AdapterKind):
    """SelaVPR++ side network; the frozen x-stream runs once for every stream."""

    def attach(self, backbone, config, streams):
        depth = backbone.n_blocks
        first = config.first_block
        if first is None:
            first = 0 if depth <= 12 else depth - 16
        if not 0 <= first < depth:
            raise ConfigError(f'adapter.first_block {first} must be in [0, {depth - 1}]')
        for stream in streams:
            backbone.add_module(STACK_NAMES[stream], SideAdapters(
                backbone.embed_dim, depth, first, config.bottleneck_ratio))

    def run(self, backbone, images, streams):
        stacks = [getattr(backbone, STACK_NAMES[stream]) for stream in streams]
        first = stacks[0].first_block
        x = backbone.prepare_tokens_with_masks(images)
        grid = backbone.grid_size(*images.shape[-2:])
        prefix = backbone.num_prefix_tokens
        ys = []
        for index, block in enumerate(backbone.blocks):
            if index == first:
                ys = [x] * len(stacks)
            x = block(x)
            if index >= first:
                ys = [y + stack[index - first](y + x, grid, prefix)
                      for y, stack in zip(ys, stacks)]
        return dict(zip(streams, ys))


class SerialParallelAdapters(AdapterKind):
    """SelaVPR/HAM-VPR adapters inside the last ``last_blocks`` blocks (one shared stream)."""

    def attach(self, backbone, config, streams):
        depth = backbone.n_blocks
        if not 0 < config.last_blocks <= depth:
            raise ConfigError(f'adapter.last_blocks {config.last_blocks} must be in [1, {depth}]')
        for block in backbone.blocks[depth - config.last_blocks:]:
            block.adapter1 = BottleneckAdapter(backbone.embed_dim, config.bottleneck_ratio,
                                               skip=True, unused_norms=config.unused_norms)
            block.adapter2 = BottleneckAdapter(backbone.embed_dim, config.bottleneck_ratio,
                                               skip=False, unused_norms=config.unused_norms)
            block.parallel_scale = config.parallel_scale


ADAPTERS.register('mulconv')(MulConvSideNetwork())
ADAPTERS.register('serial_parallel')(SerialParallelAdapters())


def attach_adapters(backbone: DinoVisionTransformer, config: AdapterConfig,
                    streams: tuple[str, ...]) -> AdapterKind:
    """Attach ``config.kind`` adapters to ``backbone``; returns the kind (it runs the ViT)."""
    kind = ADAPTERS.get(config.kind)
    kind.attach(backbone, config, streams)
    for name, param in backbone.named_parameters():
        if 'adapter' in name:
            param.requires_grad_(config.trainable)
    return kind
