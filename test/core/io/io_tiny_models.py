"""Tiny models of every output kind for the I/O tests (28 x 28 input: a 2 x 2 patch grid)."""
import torch

from vpr_core.model.config import (AdapterConfig, BackboneConfig, HashingConfig, HeadConfig,
                                   ModelConfig, PreprocessConfig)
from vpr_core.model.factory import build_model

TINY_BACKBONE = BackboneConfig(embed_dim=32, depth=2, num_heads=2, img_size=56)
TINY_PREPROCESS = PreprocessConfig(train_size=(28, 28), test_size=(28, 28), infer_batch_size=3)


def tiny_config(kind: str) -> ModelConfig:
    """'float' | 'hash' | 'two_branch' (SelaVPR++ style) or 'crossimage' (SuperVLAD)."""
    if kind == 'crossimage':
        return ModelConfig(name='tiny-supervlad', system='supervlad', backbone=TINY_BACKBONE,
                           head=HeadConfig(kind='supervlad', clusters=2, ghost_clusters=1,
                                           crossimage_encoder=True),
                           preprocess=TINY_PREPROCESS)
    bits = 0 if kind == 'float' else 64
    return ModelConfig(name=f'tiny-{kind}', system='selavpr++', backbone=TINY_BACKBONE,
                       adapter=AdapterConfig(kind='mulconv'),
                       head=HeadConfig(kind='gem', out_dim=24),
                       hashing=HashingConfig(bits=bits, rerank=kind == 'two_branch'),
                       preprocess=TINY_PREPROCESS)


def tiny_model(kind: str, seed: int = 0):
    """A tiny model with non-trivial weights (zero-init adapters perturbed, BN stats set)."""
    torch.manual_seed(seed)
    model = build_model(tiny_config(kind))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and ('adapter' in name or 'running_var' in name):
                tensor.copy_(torch.rand_like(tensor) * 0.5 + 0.1)
    return model.eval()
