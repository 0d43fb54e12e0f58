"""Name registries for model components, and the DINOv2 backbone presets.

A component is found by name; an unknown name raises :class:`ConfigError` listing the valid
ones. Aggregation heads register themselves in ``vpr_core.model.aggregators``; adapter kinds in
``vpr_core.model.adapters``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Generic, TypeVar

from torch import nn

from vpr_core.errors import ConfigError
from vpr_core.model.config import BackboneConfig, HeadConfig

T = TypeVar('T')


class Registry(Generic[T]):
    """A mapping from names to builders of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``entry`` under ``name`` (names are unique)."""
        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f'{self.kind} {name!r} is registered twice')
            self._entries[name] = entry
            return entry
        return decorate

    def get(self, name: str) -> T:
        """The entry registered as ``name``; ConfigError listing valid names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ', '.join(sorted(self._entries))
            raise ConfigError(f'unknown {self.kind} {name!r} (valid: {valid})') from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


# Official DINOv2 hub settings: plain models interpolate with the +0.1 offset and no antialias;
# ``_reg4`` models use offset 0 (explicit output size) with antialias on.
_SIZES = {
    'small': BackboneConfig(embed_dim=384, depth=12, num_heads=6),
    'base': BackboneConfig(embed_dim=768, depth=12, num_heads=12),
    'large': BackboneConfig(embed_dim=1024, depth=24, num_heads=16),
    'giant': BackboneConfig(embed_dim=1536, depth=40, num_heads=24, ffn_layer='swiglufused'),
}
BACKBONE_PRESETS: dict[str, BackboneConfig] = {}
for _size, _config in _SIZES.items():
    BACKBONE_PRESETS[f'dinov2-{_size}'] = _config
    BACKBONE_PRESETS[f'dinov2-{_size}-reg4'] = replace(
        _config, num_register_tokens=4, interpolate_offset=0.0, interpolate_antialias=True)


def backbone_preset(name: str, **changes) -> BackboneConfig:
    """The :class:`BackboneConfig` of a preset (``dinov2-{small,base,large,giant}[-reg4]``)."""
    if name not in BACKBONE_PRESETS:
        valid = ', '.join(BACKBONE_PRESETS)
        raise ConfigError(f'unknown backbone {name!r} (valid: {valid})')
    return replace(BACKBONE_PRESETS[name], **changes)


class Head(nn.Module):
    """An aggregation head: ``forward(tokens: Tokens) -> [B, out_dim]``.

    Its children are grafted onto :class:`VPRModel` under their own names, so a head's
    parameters appear at the top level of the state dict (``aggregation.1.p``, ``linear1.*``)
    exactly as in the authors' checkpoints. Heads therefore own no parameters directly.
    ``normalized``: output already L2-normalised. ``batch_dependent``: a descriptor depends on
    the other images of its batch (cross-image attention).
    """

    out_dim: int = 0
    normalized: bool = True
    batch_dependent: bool = False

    @classmethod
    def from_config(cls, config: HeadConfig, dim: int) -> 'Head':
        """Build the head for tokens of width ``dim``."""
        raise NotImplementedError


HEADS: Registry[type[Head]] = Registry('head')
