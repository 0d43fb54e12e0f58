"""Contract of every registered head x adapter kind x branch layout, and every backbone preset."""
import pytest
import torch

from vpr_core.errors import ConfigError
from vpr_core.model.adapters import ADAPTERS
from vpr_core.model.config import AdapterConfig, HashingConfig, ModelConfig
from vpr_core.model.factory import build_model
from vpr_core.model.registry import BACKBONE_PRESETS, HEADS
from vpr_core.model.vpr_model import VPRModel

BRANCHES = {'float': (0, True), 'two_branch': (16, True), 'hash': (16, False)}


@pytest.mark.parametrize('branches', sorted(BRANCHES))
@pytest.mark.parametrize('adapter', ADAPTERS.names())
@pytest.mark.parametrize('head', HEADS.names())
def test_model_contract(tiny, head, adapter, branches):
    bits, rerank = BRANCHES[branches]
    model = build_model(tiny(head=head, adapter=adapter, bits=bits, rerank=rerank,
                             registers=4 if adapter == 'mulconv' else 0))
    assert isinstance(model, VPRModel) and not model.training
    assert model.outputs == branches and model.code_bits == bits
    images = torch.randn(3, 3, 42, 56)
    floats, signs = model.descriptors(images)
    if branches == 'hash':
        assert floats is None and model.out_dim == 0
    else:
        assert floats.shape == (3, model.out_dim) and model.out_dim > 0
        assert torch.isfinite(floats).all()
        torch.testing.assert_close(floats.norm(dim=-1), torch.ones(3))
    if bits:
        assert signs.shape == (3, bits) and set(signs.unique().tolist()) <= {-1.0, 1.0}
    else:
        assert signs is None
    again = model.descriptors(images)
    for first, second in zip((floats, signs), again):
        assert first is None or torch.equal(first, second)


@pytest.mark.parametrize('adapter', ADAPTERS.names())
@pytest.mark.parametrize('head', HEADS.names())
def test_gradients_reach_trainable_parameters_only(tiny, head, adapter):
    model = build_model(tiny(head=head, adapter=adapter, bits=16)).train()
    z, b, x_g = model(torch.randn(4, 3, 42, 42))
    (z * torch.randn_like(z)).sum().add((x_g * torch.randn_like(x_g)).sum()).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f'{name} gets no gradient'
        else:
            assert param.grad is None, f'frozen {name} got a gradient'
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith('backbone.') and 'adapter' not in n for n in trainable)
    assert any(n.startswith('linear3') for n in trainable)


def test_train_blocks_from_unfreezes_late_blocks_only(tiny):
    cfg = tiny(head='supervlad')
    cfg = cfg.with_changes(backbone=cfg.backbone.__class__(
        embed_dim=64, depth=2, num_heads=2, train_blocks_from=1))
    model = build_model(cfg).train()
    model(torch.randn(2, 3, 28, 28)).sum().backward()
    assert model.backbone.blocks[1].attn.qkv.weight.grad is not None
    assert model.backbone.blocks[0].attn.qkv.weight.grad is None
    assert model.backbone.norm.weight.grad is None


@pytest.mark.parametrize('preset', sorted(BACKBONE_PRESETS))
@pytest.mark.parametrize('adapter', ADAPTERS.names())
def test_every_preset_builds_and_runs_on_meta(preset, adapter):
    cfg = ModelConfig(backbone=BACKBONE_PRESETS[preset], adapter=AdapterConfig(kind=adapter),
                      hashing=HashingConfig(bits=512))
    with torch.device('meta'):
        model = build_model(cfg)
        z, b, x_g = model(torch.empty(2, 3, 28, 42))
    dim = BACKBONE_PRESETS[preset].embed_dim
    assert x_g.shape == (2, 2048 if dim <= 768 else 4096) and b.shape == (2, 512)


def test_unknown_adapter_lists_valid_names(tiny):
    with pytest.raises(ConfigError, match='mulconv, none, serial_parallel'):
        ADAPTERS.get('lora')
    with pytest.raises(ConfigError, match='hashing.bits'):
        build_model(tiny(bits=12))
