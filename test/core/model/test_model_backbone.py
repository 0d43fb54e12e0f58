"""DINOv2 ViT: official layout, parameter counts, interpolation, outputs."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from vpr_core.errors import UnsupportedImageError
from vpr_core.model.backbone import DinoVisionTransformer
from vpr_core.model.config import BackboneConfig
from vpr_core.model.factory import dinov2
from vpr_core.model.foreign import load_foreign_weights
from vpr_core.model.layers import Attention
from vpr_core.model.registry import backbone_preset
from vpr_core.model.variants import build_backbone

# (D, depth) per size, from the spec's table; ViT-g uses SwiGLU with hidden 4096.
SPEC_SIZES = {'small': (384, 12), 'base': (768, 12), 'large': (1024, 24), 'giant': (1536, 40)}


def official_keys(size: str, registers: bool) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ``dinov2_vit?14[_reg4]_pretrain.pth`` as listed in the spec."""
    d, depth = SPEC_SIZES[size]
    keys = {'cls_token': (1, 1, d), 'pos_embed': (1, 1370, d), 'mask_token': (1, d),
            'patch_embed.proj.weight': (d, 3, 14, 14), 'patch_embed.proj.bias': (d,),
            'norm.weight': (d,), 'norm.bias': (d,)}
    if registers:
        keys['register_tokens'] = (1, 4, d)
    for i in range(depth):
        b = f'blocks.{i}.'
        keys.update({b + 'norm1.weight': (d,), b + 'norm1.bias': (d,),
                     b + 'attn.qkv.weight': (3 * d, d), b + 'attn.qkv.bias': (3 * d,),
                     b + 'attn.proj.weight': (d, d), b + 'attn.proj.bias': (d,),
                     b + 'ls1.gamma': (d,), b + 'norm2.weight': (d,), b + 'norm2.bias': (d,),
                     b + 'ls2.gamma': (d,)})
        if size == 'giant':
            keys.update({b + 'mlp.w12.weight': (8192, d), b + 'mlp.w12.bias': (8192,),
                         b + 'mlp.w3.weight': (d, 4096), b + 'mlp.w3.bias': (d,)})
        else:
            keys.update({b + 'mlp.fc1.weight': (4 * d, d), b + 'mlp.fc1.bias': (4 * d,),
                         b + 'mlp.fc2.weight': (d, 4 * d), b + 'mlp.fc2.bias': (d,)})
    return keys


def meta_backbone(size: str, registers: bool = False) -> DinoVisionTransformer:
    name = f'dinov2-{size}' + ('-reg4' if registers else '')
    with torch.device('meta'):
        return DinoVisionTransformer(backbone_preset(name))


@pytest.mark.parametrize('size', sorted(SPEC_SIZES))
@pytest.mark.parametrize('registers', [False, True])
def test_state_dict_layout_is_official(size, registers):
    ours = {k: tuple(v.shape) for k, v in meta_backbone(size, registers).state_dict().items()}
    assert ours == official_keys(size, registers)


@pytest.mark.parametrize('size, millions', [('small', 22.06), ('base', 86.58),
                                            ('large', 304.37), ('giant', 1136.48)])
def test_parameter_counts_match_spec(size, millions):
    count = sum(p.numel() for p in meta_backbone(size).parameters())
    assert round(count / 1e6, 2) == millions


def _random_official_file(tmp_path, size, registers):
    state = {k: torch.randn(shape) for k, shape in official_keys(size, registers).items()}
    path = tmp_path / f'dinov2_{size}{"_reg4" if registers else ""}_pretrain.pth'
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize('registers', [False, True])
def test_official_small_file_loads_strictly_through_factory(tmp_path, registers):
    path, state = _random_official_file(tmp_path, 'small', registers)
    model = dinov2(size='small', registers=registers, weights=path)
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.parametrize('registers', [False, True])
def test_official_base_file_loads_strictly(tmp_path, registers):
    path, state = _random_official_file(tmp_path, 'base', registers)
    with torch.device('meta'):
        model = dinov2(size='base', registers=registers)
    model = model.to_empty(device='cpu')
    load_foreign_weights(model, path)
    loaded = model.backbone.state_dict()
    for key in ('pos_embed', 'blocks.11.ls2.gamma', 'blocks.0.attn.qkv.weight', 'norm.bias'):
        assert torch.equal(loaded[key], state[key])


def test_presets_use_official_hub_interpolation_settings():
    plain, reg = backbone_preset('dinov2-large'), backbone_preset('dinov2-large-reg4')
    assert (plain.interpolate_offset, plain.interpolate_antialias, plain.num_register_tokens) \
        == (0.1, False, 0)
    assert (reg.interpolate_offset, reg.interpolate_antialias, reg.num_register_tokens) \
        == (0.0, True, 4)
    assert backbone_preset('dinov2-giant').ffn_layer == 'swiglufused'


def reference_pos_embed(pos_embed, height, width, offset, antialias, patch=14):
    """The official formula, written out: rows scale (h + off) / M, cols (w + off) / M."""
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    dim = pos_embed.shape[-1]
    rows, cols = height // patch, width // patch
    table = pos_embed[0, 1:].reshape(m, m, dim).permute(2, 0, 1)[None]
    if offset:
        out = F.interpolate(table, scale_factor=((rows + offset) / m, (cols + offset) / m),
                            mode='bicubic', antialias=antialias)
    else:
        out = F.interpolate(table, size=(rows, cols), mode='bicubic', antialias=antialias)
    patches = out[0].permute(1, 2, 0).reshape(rows * cols, dim)
    return torch.cat([pos_embed[0, :1], patches])[None]


@pytest.mark.parametrize('offset, antialias', [(0.1, False), (0.0, True)])
@pytest.mark.parametrize('height, width', [(224, 224), (322, 322), (224, 322), (98, 56)])
def test_pos_embed_interpolation_matches_official_formula(offset, antialias, height, width):
    config = BackboneConfig(embed_dim=32, depth=1, num_heads=2, interpolate_offset=offset,
                            interpolate_antialias=antialias)
    vit = DinoVisionTransformer(config)
    tokens = torch.zeros(1, 1 + (height // 14) * (width // 14), 32)
    ours = vit.interpolate_pos_encoding(tokens, height, width)
    expected = reference_pos_embed(vit.pos_embed.detach(), height, width, offset, antialias)
    torch.testing.assert_close(ours.detach(), expected, rtol=0, atol=0)


def test_pos_embed_offset_changes_the_result():
    vit = DinoVisionTransformer(BackboneConfig(embed_dim=32, depth=1, num_heads=2))
    tokens = torch.zeros(1, 1 + 23 * 23, 32)
    with_offset = vit.interpolate_pos_encoding(tokens, 322, 322)
    vit.interpolate_offset = 0.0
    assert not torch.allclose(with_offset, vit.interpolate_pos_encoding(tokens, 322, 322))


def test_pos_embed_rows_follow_image_height_for_non_square_input():
    vit = DinoVisionTransformer(BackboneConfig(embed_dim=8, depth=1, num_heads=2))
    rows = torch.linspace(-1, 1, 37)[:, None, None].expand(37, 37, 8)
    with torch.no_grad():
        vit.pos_embed[0, 1:] = rows.reshape(-1, 8)
    out = vit.interpolate_pos_encoding(torch.zeros(1, 1 + 4 * 7, 8), 56, 98)[0, 1:]
    grid = out.reshape(4, 7, 8)
    assert torch.allclose(grid, grid[:, :1].expand_as(grid), atol=1e-6)
    assert not torch.allclose(grid[0], grid[-1])


def test_pos_embed_unchanged_at_native_square_grid():
    vit = DinoVisionTransformer(BackboneConfig(embed_dim=8, depth=1, num_heads=2))
    assert vit.interpolate_pos_encoding(torch.zeros(1, 1370, 8), 518, 518) is vit.pos_embed


def test_forward_features_official_keys_and_token_order():
    vit = DinoVisionTransformer(BackboneConfig(embed_dim=32, depth=2, num_heads=2,
                                               num_register_tokens=4)).eval()
    images = torch.randn(2, 3, 28, 42)
    out = vit.forward_features(images)
    assert set(out) == {'x_norm_clstoken', 'x_norm_regtokens', 'x_norm_patchtokens',
                        'x_prenorm', 'masks'}
    assert out['x_prenorm'].shape == (2, 1 + 4 + 6, 32)
    assert out['x_norm_regtokens'].shape == (2, 4, 32)
    assert out['x_norm_patchtokens'].shape == (2, 6, 32)
    normed = vit.norm(out['x_prenorm'])
    assert torch.equal(out['x_norm_clstoken'], normed[:, 0])
    assert torch.equal(vit(images), out['x_norm_clstoken'])
    tokens = vit.prepare_tokens_with_masks(images)
    assert torch.equal(tokens[:, 1:5], vit.register_tokens.expand(2, -1, -1))


def test_masks_replace_patch_embeddings_by_mask_token():
    vit = DinoVisionTransformer(BackboneConfig(embed_dim=16, depth=1, num_heads=2))
    with torch.no_grad():
        vit.mask_token.fill_(7.0)
    masks = torch.zeros(1, 4, dtype=torch.bool)
    masks[0, 2] = True
    tokens = vit.prepare_tokens_with_masks(torch.randn(1, 3, 28, 28), masks)
    pos = vit.interpolate_pos_encoding(tokens, 28, 28)
    torch.testing.assert_close(tokens[0, 3], 7.0 + pos[0, 3])


def test_input_sides_must_be_multiples_of_patch():
    vit = DinoVisionTransformer(BackboneConfig(embed_dim=16, depth=1, num_heads=2))
    with pytest.raises(UnsupportedImageError, match='multiples of 14'):
        vit(torch.randn(1, 3, 30, 28))


def test_sdpa_attention_equals_softmax_attention():
    attn = Attention(32, 4)
    x = torch.randn(2, 7, 32)
    b, n, c = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * 8 ** -0.5, qkv[1], qkv[2]
    weights = (q @ k.transpose(-2, -1)).softmax(dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(b, n, c))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_official_initialisation():
    vit = DinoVisionTransformer(BackboneConfig(embed_dim=64, depth=2, num_heads=2,
                                               num_register_tokens=4))
    assert vit.cls_token.abs().max() < 1e-4 and vit.register_tokens.abs().max() < 1e-4
    assert torch.count_nonzero(vit.mask_token) == 0
    assert 0.015 < vit.pos_embed.std() < 0.025
    assert 0.015 < vit.blocks[0].mlp.fc1.weight.std() < 0.025
    assert torch.count_nonzero(vit.blocks[0].attn.qkv.bias) == 0
    assert torch.equal(vit.blocks[1].ls2.gamma, torch.ones(64))


def test_conv_stem_replaces_the_patch_embedding():
    config = BackboneConfig(embed_dim=64, depth=1, num_heads=2, img_size=64, patch_size=8,
                            stem='conv')
    vit = build_backbone(config)
    shapes = {k: tuple(v.shape) for k, v in vit.state_dict().items()
              if k.startswith('patch_embed.') and k.endswith('weight')}
    # Widths double up to D: 3 -> 16 -> 32 -> 64 by three stride-2 3x3 convs, then 1x1.
    stem = 'patch_embed.stem.'
    assert shapes == {stem + '0.weight': (16, 3, 3, 3), stem + '1.weight': (16,),
                      stem + '3.weight': (32, 16, 3, 3), stem + '4.weight': (32,),
                      stem + '6.weight': (64, 32, 3, 3), stem + '7.weight': (64,),
                      'patch_embed.proj.weight': (64, 64, 1, 1)}
    out = vit.forward_features(torch.randn(2, 3, 32, 64))
    assert out['x_norm_patchtokens'].shape == (2, 4 * 8, 64)
    with pytest.raises(UnsupportedImageError, match='multiples of 8'):
        vit(torch.randn(1, 3, 30, 64))


def test_a_vgg_stem_convolves_every_resolution_before_pooling():
    config = BackboneConfig(embed_dim=64, depth=1, num_heads=2, img_size=64, patch_size=4,
                            stem='vgg', stem_depth=2)
    vit = build_backbone(config)
    layers = list(vit.patch_embed.stem)
    convs = [m for m in layers if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == \
        [(3, 32, 1), (32, 32, 1), (32, 64, 1), (64, 64, 1)]
    pools = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [6, 13]                 # after each stage's two conv-BN-ReLU layers
    assert vit.forward_features(torch.randn(2, 3, 32, 64))['x_norm_patchtokens'].shape == \
        (2, 8 * 16, 64)
    from vpr_core.errors import ConfigError
    with pytest.raises(ConfigError, match='stem_depth must be >= 1'):
        build_backbone(dataclasses.replace(config, stem_depth=0))


def test_conv_stem_needs_a_power_of_two_patch():
    from vpr_core.errors import ConfigError
    with pytest.raises(ConfigError, match='power-of-two'):
        build_backbone(BackboneConfig(embed_dim=64, depth=1, num_heads=2, img_size=56,
                                      patch_size=14, stem='conv'))
    with pytest.raises(ConfigError, match='valid: patch, conv, vgg'):
        build_backbone(BackboneConfig(embed_dim=64, depth=1, num_heads=2, stem='hybrid'))


@pytest.mark.parametrize('stem', ['conv', 'vgg'])
def test_a_frozen_backbone_keeps_its_conv_stem_trainable(stem):
    from vpr_core.model.backbone import freeze_backbone
    vit = build_backbone(BackboneConfig(embed_dim=64, depth=2, num_heads=2, img_size=64,
                                        patch_size=4, stem=stem))
    freeze_backbone(vit, None)
    trainable = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in vit.named_parameters() if n.startswith('patch_embed.')}
    assert trainable and not vit.pos_embed.requires_grad


def test_image_standardisation_removes_exposure_and_contrast():
    config = BackboneConfig(embed_dim=64, depth=1, num_heads=2, img_size=64, patch_size=4,
                            stem='vgg', input_norm='image')
    vit = build_backbone(config).eval()
    images = torch.randn(2, 3, 32, 64)
    # A darker, flatter exposure of the same frames gives the same tokens, up to the eps
    # (1e-3) added to a standard deviation of 0.3 instead of 1.
    tokens = vit.forward_features(images)['x_norm_patchtokens']
    dimmed = vit.forward_features(0.3 * images - 1.5)['x_norm_patchtokens']
    torch.testing.assert_close(dimmed, tokens, atol=1e-2, rtol=0)
    assert torch.isfinite(vit.forward_features(torch.zeros(1, 3, 32, 64))['x_prenorm']).all()
    assert not list(vit.patch_embed.standardize.parameters())  # same state-dict layout
    plain = build_backbone(dataclasses.replace(config, input_norm='none')).eval()
    plain.load_state_dict(vit.state_dict())
    changed = plain.forward_features(0.3 * images - 1.5)['x_norm_patchtokens']
    assert (changed - plain.forward_features(images)['x_norm_patchtokens']).abs().max() > 0.1
    from vpr_core.errors import ConfigError
    with pytest.raises(ConfigError, match='valid: none, image'):
        build_backbone(dataclasses.replace(config, input_norm='local'))


def test_without_final_norm_the_heads_read_prenorm_tokens():
    config = BackboneConfig(embed_dim=64, depth=2, num_heads=2, img_size=64, patch_size=4,
                            stem='vgg', final_norm=False)
    vit = build_backbone(config).eval()
    assert not any(name.startswith('norm.') for name in vit.state_dict())
    features = vit.forward_features(torch.randn(2, 3, 32, 64))
    torch.testing.assert_close(features['x_norm_patchtokens'], features['x_prenorm'][:, 1:])
    normed = build_backbone(dataclasses.replace(config, final_norm=True)).eval()
    assert {'norm.weight', 'norm.bias'} <= normed.state_dict().keys()


def test_the_published_front_end_is_the_official_one():
    """Without variants, build_backbone gives the official ViT: same modules, same random
    initialisation as the class alone, and no stem or standardisation in front."""
    from vpr_core.model.layers import PatchEmbed
    config = BackboneConfig(embed_dim=64, depth=2, num_heads=2)
    torch.manual_seed(0)
    plain = DinoVisionTransformer(config)
    torch.manual_seed(0)
    built = build_backbone(config)
    assert type(built.patch_embed) is PatchEmbed and type(built.norm) is torch.nn.LayerNorm
    assert plain.state_dict().keys() == built.state_dict().keys()
    assert all(torch.equal(v, built.state_dict()[k]) for k, v in plain.state_dict().items())
    images = torch.randn(1, 3, 28, 42)
    torch.testing.assert_close(built.eval()(images), plain.eval()(images), rtol=0, atol=0)


def test_standardised_input_keeps_the_patch_embedding_layout():
    config = BackboneConfig(embed_dim=64, depth=1, num_heads=2, input_norm='image')
    vit = build_backbone(config)
    official = DinoVisionTransformer(dataclasses.replace(config, input_norm='none'))
    assert vit.state_dict().keys() == official.state_dict().keys()
    official.load_state_dict(vit.state_dict())
    images = torch.randn(2, 3, 28, 28)
    standardised = (images - images.mean(dim=(1, 2, 3), keepdim=True)) / \
        (images.std(dim=(1, 2, 3), keepdim=True) + 1e-3)
    torch.testing.assert_close(vit.eval()(images), official.eval()(standardised))
