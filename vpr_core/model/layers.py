"""Building blocks of the DINOv2 ViT and the pooling layers shared by the VPR heads.

Parameter names follow facebookresearch/dinov2 (``attn.qkv``, ``ls1.gamma``, ``mlp.fc1``,
``mlp.w12`` ...) so official checkpoints load without renaming. Pooling layers follow the
Visual-Geo-localization-Benchmark (L2Norm, GeM with p=3 / eps=1e-6, Flatten) used by the seeds.
:func:`pool_strips` and :func:`pooled_codes` pool vertical strips of a GeM head's map for our
strip whitening (:mod:`vpr_core.model.whitening`), not for the published heads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn, Tensor
import torch.nn.functional as F


class PatchEmbed(nn.Module):
    """[B, 3, H, W] -> [B, H/p * W/p, D] by a stride-p convolution (row-major patch order)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv; softmax(QK^T / sqrt(d)) V via SDPA."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """[B, N, D] -> [B, N, D]."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (ViT-S/B/L)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFNFused(nn.Module):
    """SwiGLU FFN of ViT-g: w12 (fused gate + value) -> silu(a) * b -> w3.

    The hidden width is rounded as in the official code: (int(hidden * 2 / 3) + 7) // 8 * 8,
    i.e. 4096 for ViT-g (mlp_ratio 4 of 1536).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    """Per-channel residual scale ``gamma`` (init ``init_values``; overwritten by checkpoints)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm ViT block: x + ls1(attn(norm1 x)); x + ls2(mlp(norm2 x)).

    With the SelaVPR adapter pair attached (``adapter1`` serial, ``adapter2`` parallel), the
    block computes x + ls1(adapter1(attn(norm1 x))) and
    x + ls2(mlp(norm2 x) + parallel_scale * adapter2(norm2 x)).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, ffn_layer: str,
                 init_values: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        ffn = SwiGLUFFNFused if ffn_layer == 'swiglufused' else Mlp
        self.mlp = ffn(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.adapter1: nn.Module | None = None
        self.adapter2: nn.Module | None = None
        self.parallel_scale = 0.0

    def forward(self, x: Tensor) -> Tensor:
        """[B, N, D] -> [B, N, D]."""
        attn = self.attn(self.norm1(x))
        if self.adapter1 is not None:
            attn = self.adapter1(attn)
        x = x + self.ls1(attn)
        hidden = self.norm2(x)
        ffn = self.mlp(hidden)
        if self.adapter2 is not None:
            ffn = ffn + self.parallel_scale * self.adapter2(hidden)
        return x + self.ls2(ffn)


@dataclass(frozen=True)
class Tokens:
    """One stream's tokens after the final LayerNorm.

    ``x`` [B, 1 + R + N, D] in the order CLS, R register tokens, N = h * w patch tokens (row-major
    over the ``grid`` (h, w)); ``num_prefix`` = 1 + R.
    """

    x: Tensor
    grid: tuple[int, int]
    num_prefix: int

    @property
    def cls(self) -> Tensor:
        """[B, D] CLS token."""
        return self.x[:, 0]

    @property
    def patch(self) -> Tensor:
        """[B, N, D] patch tokens."""
        return self.x[:, self.num_prefix:]

    def patch_grid(self) -> Tensor:
        """[B, h, w, D] patch tokens on their grid."""
        h, w = self.grid
        return self.patch.reshape(self.x.shape[0], h, w, self.x.shape[-1])

    def patch_map(self) -> Tensor:
        """[B, D, h, w] patch tokens as a feature map."""
        return self.patch_grid().permute(0, 3, 1, 2)


class L2Norm(nn.Module):
    """L2-normalise along ``dim`` (channels of a [B, C, h, w] map by default)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2, dim=self.dim)


class GeM(nn.Module):
    """Generalised-mean pooling [B, C, h, w] -> [B, C, 1, 1] with one learnable p (init 3)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = x.clamp(min=self.eps).pow(self.p)
        if torch.onnx.is_in_onnx_export():  # same mean; ONNX needs a kernel-free reduction
            pooled = x.mean(dim=(-2, -1), keepdim=True)
        else:  # the seeds' avg_pool2d, for bit-level agreement in eager mode
            pooled = F.avg_pool2d(x, (x.size(-2), x.size(-1)))
        return pooled.pow(1.0 / self.p)


class Flatten(nn.Module):
    """[B, C, 1, 1] -> [B, C]."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, 0, 0]


def gem_pooling() -> nn.Sequential:
    """The seeds' ``Sequential(L2Norm, GeM, Flatten)``; index 1 holds ``p``."""
    return nn.Sequential(L2Norm(), GeM(), Flatten())


def pool_strips(pooling: nn.Module, fmap: Tensor, strips: int) -> Tensor:
    """[B, C, h, w] map -> [B, strips, C]: ``pooling`` ([B, C, h, w] -> [B, C]) over each of
    ``strips`` vertical bands of columns (``torch.tensor_split``: equal when ``strips``
    divides w, otherwise the first bands are one column wider)."""
    if not 1 <= strips <= fmap.shape[-1]:
        raise ValueError(f'cannot split {fmap.shape[-1]} token columns into {strips} strips')
    return torch.stack([pooling(band) for band in torch.tensor_split(fmap, strips, dim=-1)],
                       dim=1)


def pooled_codes(fmap: Tensor, pooling: nn.Module, linear: nn.Module,
                 strips: int = 0) -> tuple[Tensor, Tensor | None]:
    """A GeM head's last steps on its map [B, C, h, w]: ``pooling``, ``linear``, L2 ->
    [B, out]; with ``strips``, the same for each vertical strip -> [B, strips, out]."""
    pooled = F.normalize(linear(pooling(fmap)), p=2, dim=-1)
    if not strips:
        return pooled, None
    return pooled, F.normalize(linear(pool_strips(pooling, fmap, strips)), p=2, dim=-1)


def init_linear_trunc_normal(module: nn.Module) -> None:
    """timm ViT init: every Linear weight trunc-normal(std .02, cut at +-2), bias 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02, a=-2.0, b=2.0)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
