"""The VPR model: DINOv2 backbone (+ adapters) -> float head and/or hashing head.

Build one with :func:`vpr_core.model.factory.build_model`. The state-dict layout of each
published configuration is the authors' own with ``module.`` stripped: ``backbone.*`` (with
``backbone.adapters.j.*`` / ``backbone.adapters_hashing.j.*`` or
``backbone.blocks.k.adapter{1,2}.*``) and the heads' children at the top level
(``aggregation.1.p``, ``linear1``..``linear4``, ``aggregation_hashing.1.p``, ``encoder.*``,
``attention_unet.*``, ``amg_gem.p``). An optional stage after the heads (``post``) rewrites
the float descriptor: ours is the learned whitening (``whiten.*``,
:mod:`vpr_core.model.whitening`), which the bundled model opts into.
"""
from __future__ import annotations

from typing import Literal

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
                 hashing: HashingHead | None, post: nn.Module | None = None) -> None:
        super().__init__()
        if head is None and hashing is None:
            raise ValueError('a VPRModel needs a float head, a hashing head or both')
        self.config = config
        self.backbone = backbone
        self.adapter_kind = adapter_kind
        if post is not None and head is None:
            raise ValueError('a stage after the heads needs the float head')
        for part in (head, hashing, post):
            if part is not None:
                self._graft(part)
        # Plain references (not registered twice): their children are registered above.
        self.__dict__['float_head'] = head
        self.__dict__['hashing_head'] = hashing
        self.__dict__['post'] = post
        self.out_dim = head.out_dim if head is not None else 0
        self.code_bits = hashing.bits if hashing is not None else 0
        self.outputs: Outputs = ('float' if hashing is None else
                                 'hash' if head is None else 'two_branch')
        self.streams = tuple(name for name, part in (('float', head), ('hash', hashing))
                             if part is not None)
        self.batch_dependent = bool(head is not None and head.batch_dependent)

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
        x_g = z = b = None
        if self.float_head is not None:
            x_g = self.float_head(tokens['float'])
        if self.hashing_head is not None:
            z, b = self.hashing_head(tokens['hash'])
        if self.post is not None:
            x_g = self.post(tokens, x_g, z)
        if self.hashing_head is None:
            return x_g
        return (z, b) if x_g is None else (z, b, x_g)

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
