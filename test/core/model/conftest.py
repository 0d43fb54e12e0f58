"""Tiny model configurations shared by the model tests (fast on a 2-core CPU)."""
from dataclasses import replace

import pytest
import torch

from vpr_core.model.config import (AdapterConfig, BackboneConfig, HashingConfig, HeadConfig,
                                   ModelConfig)

TINY_BACKBONE = BackboneConfig(embed_dim=64, depth=2, num_heads=2)
TINY_HEAD = HeadConfig(out_dim=32, boq_proj_channels=64, boq_num_queries=4, salad_clusters=4,
                       salad_cluster_dim=8, salad_token_dim=16, mask_channels=8)


def tiny_config(head: str = 'gem', adapter: str = 'none', bits: int = 0, rerank: bool = True,
                registers: int = 0, **head_changes) -> ModelConfig:
    """A 2-block, 64-wide model of any head/adapter combination."""
    return ModelConfig(
        backbone=replace(TINY_BACKBONE, num_register_tokens=registers),
        adapter=AdapterConfig(kind=adapter, last_blocks=2),
        head=replace(TINY_HEAD, kind=head, **head_changes),
        hashing=HashingConfig(bits=bits, rerank=rerank))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture
def tiny():
    """The :func:`tiny_config` builder."""
    return tiny_config
