"""Adapters: MulConv side network (SelaVPR++) and serial+parallel pair (SelaVPR / HAM-VPR)."""
import pytest
import torch
import torch.nn.functional as F

from vpr_core.errors import ConfigError
from vpr_core.model.adapters import BottleneckAdapter, MulConvAdapter, mulconv_widths
from vpr_core.model.factory import build_model, ham_vpr, selavpr_plusplus, supervlad


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_mulconv_widths_reproduce_the_seeds():
    assert mulconv_widths(768) == (384, 192, 24, 96, 24, 96)
    assert mulconv_widths(1024) == (512, 256, 32, 128, 32, 128)
    for dim in (64, 384, 1536, 100):
        hidden, ch1, _, ch3, _, ch5 = mulconv_widths(dim)
        assert ch1 + ch3 + ch5 == hidden == dim // 2


def test_mulconv_adapter_parameter_counts():
    assert count(MulConvAdapter(768)) == 762_768
    assert count(MulConvAdapter(1024)) == 1_354_944
    with torch.device('meta'):
        base, large = selavpr_plusplus(backbone='dinov2-base'), selavpr_plusplus()
    assert round(count(base.backbone.adapters) / 1e6, 3) == 9.153
    assert round(count(large.backbone.adapters) / 1e6, 3) == 21.679
    assert len(base.backbone.adapters) == 12 and base.backbone.adapters.first_block == 0
    assert len(large.backbone.adapters) == 16 and large.backbone.adapters.first_block == 8


def test_mulconv_init():
    adapter = MulConvAdapter(64)
    assert torch.count_nonzero(adapter.D_fc2.weight) == 0
    assert torch.count_nonzero(adapter.D_fc2.bias) == 0
    assert torch.all(adapter.branch3[1].conv.weight == 1e-5)
    assert torch.all(adapter.branch1.conv.bias == 1e-5)
    assert adapter.branch2[0].bn.eps == 1e-3
    assert 0.01 < adapter.D_fc1.weight.std() < 0.03
    assert torch.count_nonzero(adapter.D_fc1.bias) == 0


@pytest.mark.parametrize('num_prefix', [1, 5])
def test_mulconv_forward_matches_the_spec_equations(num_prefix):
    adapter = MulConvAdapter(64).eval()
    for param in adapter.parameters():
        torch.nn.init.normal_(param, std=0.2)
    x = torch.randn(2, num_prefix + 6, 64)
    u = F.relu(adapter.D_fc1(x))
    grid = u[:, num_prefix:].reshape(2, 2, 3, 32).permute(0, 3, 1, 2)
    conv = torch.cat([adapter.branch1(grid), adapter.branch2(grid), adapter.branch3(grid)], 1)
    expected_patch = adapter.D_fc2(conv.permute(0, 2, 3, 1).reshape(2, 6, 32) + u[:, num_prefix:])
    expected_prefix = adapter.D_fc2(2 * u[:, :num_prefix])
    out = adapter(x, (2, 3), num_prefix)
    torch.testing.assert_close(out[:, num_prefix:], expected_patch)
    torch.testing.assert_close(out[:, :num_prefix], expected_prefix)


@pytest.mark.parametrize('registers', [0, 4])
def test_side_network_at_init_outputs_norm_of_first_tokens(registers, tiny):
    model = build_model(tiny(adapter='mulconv', registers=registers))
    images = torch.randn(2, 3, 42, 28)
    tokens = model.stream_tokens(images)['float']
    x0 = model.backbone.prepare_tokens_with_masks(images)
    torch.testing.assert_close(tokens.x, model.backbone.norm(x0), rtol=0, atol=0)
    assert tokens.grid == (3, 2) and tokens.num_prefix == 1 + registers


def test_side_network_recursion_with_trained_adapters(tiny):
    model = build_model(tiny(adapter='mulconv', bits=16))
    for param in model.backbone.adapters.parameters():
        torch.nn.init.normal_(param, std=0.05)
    backbone = model.backbone
    images = torch.randn(2, 3, 28, 28)
    x = backbone.prepare_tokens_with_masks(images)
    y = x
    for block, adapter in zip(backbone.blocks, backbone.adapters):
        x = block(x)
        y = y + adapter(y + x, (2, 2), 1)
    tokens = model.stream_tokens(images)
    torch.testing.assert_close(tokens['float'].x, backbone.norm(y))
    assert not torch.allclose(tokens['hash'].x, tokens['float'].x)


def test_side_network_first_block_skips_early_blocks(tiny):
    cfg = tiny(adapter='mulconv')
    cfg = cfg.with_changes(adapter=cfg.adapter.__class__(kind='mulconv', first_block=1))
    model = build_model(cfg)
    images = torch.randn(1, 3, 28, 28)
    x1 = model.backbone.blocks[0](model.backbone.prepare_tokens_with_masks(images))
    assert len(model.backbone.adapters) == 1
    torch.testing.assert_close(model.stream_tokens(images)['float'].x, model.backbone.norm(x1))


def test_frozen_stream_builds_no_graph_and_backbone_runs_once(tiny):
    model = build_model(tiny(adapter='mulconv', bits=16)).train()
    block_outputs, calls = [], []
    for block in model.backbone.blocks:
        block.register_forward_hook(lambda m, i, o: block_outputs.append(o))
    model.backbone.patch_embed.register_forward_hook(lambda m, i, o: calls.append(o))
    z, b, x_g = model(torch.randn(2, 3, 28, 28))
    assert len(calls) == 1 and len(block_outputs) == len(model.backbone.blocks)
    assert all(o.grad_fn is None and not o.requires_grad for o in block_outputs)
    (z.sum() + x_g.sum()).backward()
    assert model.backbone.adapters[0].D_fc2.weight.grad is not None
    assert model.backbone.adapters_hashing[0].D_fc2.weight.grad is not None
    assert all(p.grad is None for n, p in model.backbone.named_parameters() if 'adapter' not in n)


def test_bottleneck_adapter_math_and_init():
    serial = BottleneckAdapter(64, 0.5, skip=True, unused_norms=True)
    assert torch.count_nonzero(serial.D_fc2.weight) == 0
    torch.nn.init.normal_(serial.D_fc2.weight)
    x = torch.randn(3, 64)
    torch.testing.assert_close(serial(x), x + serial.D_fc2(F.relu(serial.D_fc1(x))))
    parallel = BottleneckAdapter(64, 0.5, skip=False)
    assert not hasattr(parallel, 'norm1')
    assert count(BottleneckAdapter(1024, 0.5, skip=False)) == 1_050_112


def test_serial_parallel_block_equations(tiny):
    model = build_model(tiny(adapter='serial_parallel'))
    block = model.backbone.blocks[1]
    for adapter in (block.adapter1, block.adapter2):
        torch.nn.init.normal_(adapter.D_fc2.weight, std=0.1)
    x = torch.randn(2, 5, 64)
    attn = block.attn(block.norm1(x))
    x1 = x + block.ls1(attn + block.adapter1.D_fc2(F.relu(block.adapter1.D_fc1(attn))))
    h = block.norm2(x1)
    adapter2 = block.adapter2.D_fc2(F.relu(block.adapter2.D_fc1(h)))
    expected = x1 + block.ls2(block.mlp(h) + 0.2 * adapter2)
    torch.testing.assert_close(block(x), expected)


def test_serial_parallel_at_init_equals_plain_vit(tiny):
    model = build_model(tiny(adapter='serial_parallel', head='cls'))
    images = torch.randn(2, 3, 28, 28)
    plain = build_model(tiny(head='cls'))
    plain.backbone.load_state_dict(
        {k: v for k, v in model.backbone.state_dict().items() if 'adapter' not in k})
    torch.testing.assert_close(model(images), plain(images))


def test_ham_adapters_layout_and_count():
    with torch.device('meta'):
        model = ham_vpr()
    adapters = {n: p for n, p in model.named_parameters() if 'adapter' in n}
    assert round(sum(p.numel() for p in adapters.values()) / 1e6, 2) == 12.64
    blocks = {int(n.split('.')[2]) for n in adapters}
    assert blocks == set(range(18, 24))
    assert 'backbone.blocks.18.adapter1.norm1.weight' in model.state_dict()
    assert model.backbone.blocks[23].adapter2.norm2.weight.shape == (1024,)
    assert not any(p.requires_grad for p in adapters.values())


def test_supervlad_freezing_and_trainable_count():
    with torch.device('meta'):
        model = supervlad()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert round(sum(p.numel() for n, p in model.named_parameters() if n in trainable) / 1e6,
                 2) == 39.39
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 97.61
    assert round(count(model.encoder) / 1e6, 2) == 11.03
    assert 'backbone.blocks.8.attn.qkv.weight' in trainable
    assert not trainable & {'backbone.blocks.7.attn.qkv.weight', 'backbone.norm.weight',
                            'backbone.pos_embed', 'backbone.patch_embed.proj.weight'}


def test_invalid_adapter_settings_raise(tiny):
    cfg = tiny(adapter='serial_parallel')
    with pytest.raises(ConfigError, match='last_blocks'):
        build_model(cfg.with_changes(adapter=cfg.adapter.__class__(
            kind='serial_parallel', last_blocks=3)))
    with pytest.raises(ConfigError, match='first_block'):
        build_model(cfg.with_changes(adapter=cfg.adapter.__class__(kind='mulconv',
                                                                   first_block=2)))
