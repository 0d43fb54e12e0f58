"""The VPR model: DINOv2 backbone (+ adapters) -> float head and/or hashing head.

Build one with :func:`vpr_core.model.factory.build_model`. The state-dict layout of each
published configuration is the authors' own with ``module.`` stripped: ``backbone.*`` (with
``backbone.adapters.j.*`` / ``backbone.adapters_hashing.j.*`` or
``backbone.blocks.k.adapter{1,2}.*``) and the heads' children at the top level
(``aggregation.1.p``, ``linear1``..``linear4``, ``aggregation_hashing.1.p``, ``encoder.*``,
``attention_unet.*``, ``amg_gem.p``); ours adds ``whiten.*`` (learned whitening of the float
descriptor, or of it beside the hashing code z, with the heads' vertical strips when
``whitening_strips``, when ``ModelConfig.whitening``).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn, Tensor
import torch.nn.functional as F

from vpr_core.model.adapters import AdapterKind
from vpr_core.model.backbone import DinoVisionTransformer
from vpr_core.model.config import ModelConfig
from vpr_core.model.hashing import HashingHead
from vpr_core.model.layers import Tokens
from vpr_core.model.registry import Head

Outputs = Literal['float', 'hash', 'two_branch']


class VPRModel(nn.Module):
    """Images [B, 3, H, W] (ImageNet-normalised, sides multiples of 14) -> descriptors.

    ``forward`` returns what the authors' model returns: x_g [B, out_dim] (float model, or the
    CLS token for plain DINOv2); (z, b) for the hashing-only model; (z, b, x_g) for the
    two-branch model. :meth:`descriptors` is the uniform accessor (float, signs).

    Attributes: ``config`` (ModelConfig), ``out_dim`` (float descriptor width, 0 if none),
    ``code_bits`` (0 if none), ``outputs`` ('float' | 'hash' | 'two_branch'),
    ``batch_dependent`` (True when descriptors depend on the other images of a batch).
    """

    def __init__(self, config: ModelConfig, backbone: DinoVisionTransformer,
                 adapter_kind: AdapterKind, head: Head | None,
                 hashing: HashingHead | None) -> None:
        super().__init__()
        if head is None and hashing is None:
            raise ValueError('a VPRModel needs a float head, a hashing head or both')
        self.config = config
        self.backbone = backbone
        self.adapter_kind = adapter_kind
        for part in (head, hashing):
            if part is not None:
                self._graft(part)
        # Plain references (not registered twice): their children are registered above.
        self.__dict__['float_head'] = head
        self.__dict__['hashing_head'] = hashing
        self.out_dim = head.out_dim if head is not None else 0
        self.code_bits = hashing.bits if hashing is not None else 0
        self.outputs: Outputs = ('float' if hashing is None else
                                 'hash' if head is None else 'two_branch')
        self.streams = tuple(name for name, part in (('float', head), ('hash', hashing))
                             if part is not None)
        self.batch_dependent = bool(head is not None and head.batch_dependent)
        self.whiten = None
        if config.whitening and head is not None:
            both = config.whitening_input == 'float+hash'
            parts = 1 + config.whitening_strips
            self.whiten = nn.Linear(parts * (self.out_dim + (self.code_bits if both else 0)),
                                    self.out_dim)
            with torch.no_grad():     # identity on the float descriptor (zeros on z)
                self.whiten.weight.copy_(torch.eye(*self.whiten.weight.shape))
                self.whiten.bias.zero_()
            self.whiten.requires_grad_(False)

    def _graft(self, part: nn.Module) -> None:
        if next(part.parameters(recurse=False), None) is not None:
            raise ValueError(f'{type(part).__name__} must keep its parameters in child modules')
        for name, child in part.named_children():
            if name in self._modules:
                raise ValueError(f'head module name {name!r} is used twice')
            self.add_module(name, child)

    @property
    def embed_dim(self) -> int:
        """Token width D of the backbone."""
        return self.backbone.embed_dim

    def stream_tokens(self, images: Tensor) -> dict[str, Tokens]:
        """[B, 3, H, W] -> {'float' | 'hash': final-LayerNorm tokens}; the ViT runs once."""
        grid = self.backbone.grid_size(*images.shape[-2:])
        prenorm = self.adapter_kind.run(self.backbone, images, self.streams)
        normed: dict[int, Tokens] = {}
        for x in prenorm.values():
            if id(x) not in normed:
                normed[id(x)] = Tokens(self.backbone.norm(x), grid,
                                       self.backbone.num_prefix_tokens)
        return {stream: normed[id(x)] for stream, x in prenorm.items()}

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, ...]:
        """[B, 3, H, W] -> x_g [B, out_dim] | (z, b) | (z, b, x_g), b in {-1, +1}."""
        tokens = self.stream_tokens(images)
        strips = self.config.whitening_strips if self.whiten is not None else 0
        x_g = x_strips = z = b = z_strips = None
        if self.float_head is not None:
            if strips:
                x_g, x_strips = self.float_head.describe(tokens['float'], strips)
            else:
                x_g = self.float_head(tokens['float'])
        if self.hashing_head is not None:
            z, b, z_strips = self.hashing_head.describe(tokens['hash'], strips)
        if self.whiten is not None:
            x_g = F.normalize(self.whiten(self.whitening_input(x_g, z, x_strips, z_strips)),
                              p=2, dim=-1)
        if self.hashing_head is None:
            return x_g
        return (z, b) if x_g is None else (z, b, x_g)

    def whitening_input(self, x_g: Tensor, z: Tensor | None, x_strips: Tensor | None = None,
                        z_strips: Tensor | None = None) -> Tensor:
        """What ``whiten`` reads: x_g, or [unit x_g, z] for ``whitening_input`` float+hash,
        followed by the float strips and then the hashing strips when ``whitening_strips``."""
        if self.config.whitening_input == 'float' and x_strips is None:
            return x_g
        parts = [F.normalize(x_g, p=2, dim=-1)]
        if self.config.whitening_input == 'float+hash':
            parts.append(z)
        if x_strips is not None:
            parts.append(x_strips.flatten(1))
            if self.config.whitening_input == 'float+hash':
                parts.append(z_strips.flatten(1))
        return torch.cat(parts, dim=-1)

    def descriptors(self, images: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """[B, 3, H, W] -> (float [B, out_dim] unit norm | None, signs [B, bits] | None)."""
        out = self.forward(images)
        if self.outputs == 'float':
            floats, signs = out, None
        elif self.outputs == 'hash':
            floats, signs = None, out[1]
        else:
            floats, signs = out[2], out[1]
        if floats is not None and not self.float_head.normalized:
            floats = F.normalize(floats, p=2, dim=-1)
        return floats, signs
