"""Learned whitening: the closed-form fit, and the model's whitened float descriptor."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vpr_core.errors import ConfigError
from vpr_core.model.checkpoint import load_model, save_model
from vpr_core.model.config import AdapterConfig, BackboneConfig, HashingConfig, HeadConfig, \
    ModelConfig, PreprocessConfig
from vpr_core.model.factory import build_model
from vpr_core.model.whitening import fit_whitening


def seasons(num_places=60, dim=16, seed=0):
    """Places that differ a little in every direction, and images of one place that differ a
    lot along a 4-d 'season' subspace (plus a little everywhere): two images (summer,
    winter) per place."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_places, dim))
    nuisance = np.linalg.qr(rng.normal(size=(dim, 4)))[0]
    images = centres[:, None] + 4.0 * rng.normal(size=(num_places, 2, 4)) @ nuisance.T
    images += 0.1 * rng.normal(size=images.shape)
    return images.reshape(-1, dim), [np.array([2 * p, 2 * p + 1]) for p in range(num_places)]


def recall_at_1(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    summer, winter = x[0::2], x[1::2]
    return float(np.mean(np.argmax(winter @ summer.T, axis=1) == np.arange(len(summer))))


def test_whitening_removes_what_changes_within_a_place():
    x, groups = seasons()
    weight, bias = fit_whitening(x, groups, shrinkage=0.1)
    assert recall_at_1(x) < 0.5
    assert recall_at_1(x @ weight.T + bias) > 0.9


def test_the_fit_whitens_the_within_place_scatter_and_decorrelates_the_rest():
    x, groups = seasons()
    weight, bias = fit_whitening(x, groups, shrinkage=1e-9)
    y = x @ weight.T + bias
    centred = np.concatenate([y[g] - y[g].mean(axis=0) for g in groups])
    np.testing.assert_allclose(centred.T @ centred / len(centred), np.eye(16), atol=1e-5)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-9)
    total = y.T @ y / len(y)
    np.testing.assert_allclose(total, np.diag(np.diag(total)), atol=1e-6)
    assert np.all(np.diff(np.diag(total)) <= 1e-9)          # principal axes, largest first


def test_bad_whitening_input_is_refused():
    x, groups = seasons()
    with pytest.raises(ConfigError, match='shrinkage'):
        fit_whitening(x, groups, shrinkage=0.0)
    with pytest.raises(ConfigError, match='two or more images'):
        fit_whitening(x, [np.array([0])], shrinkage=0.1)
    with pytest.raises(ConfigError, match='identical descriptors'):
        fit_whitening(np.ones((4, 3)), [np.array([0, 1]), np.array([2, 3])])


def tiny(**changes):
    config = ModelConfig(
        name='tiny', system='selavpr++',
        backbone=BackboneConfig(embed_dim=64, depth=2, num_heads=2, img_size=56,
                                patch_size=14),
        adapter=AdapterConfig(kind='mulconv'), head=HeadConfig(kind='gem', out_dim=32),
        preprocess=PreprocessConfig(train_size=(28, 28), test_size=(28, 28)))
    return dataclasses.replace(config, **changes)


def test_a_whitened_model_applies_the_fitted_projection_and_keeps_it_on_disk(tmp_path):
    torch.manual_seed(0)
    plain = build_model(tiny())
    model = build_model(tiny(whitening=True))
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ['whiten.weight', 'whiten.bias']
    images = torch.randn(3, 3, 28, 28)
    raw, _ = plain.descriptors(images)
    torch.testing.assert_close(model.descriptors(images)[0], raw)   # identity until fitted
    weight, bias = torch.randn(32, 32), torch.randn(32)
    with torch.no_grad():
        model.whiten.weight.copy_(weight)
        model.whiten.bias.copy_(bias)
    expected = F.normalize(raw @ weight.T + bias, dim=-1)
    torch.testing.assert_close(model.descriptors(images)[0], expected)
    save_model(model, tmp_path / 'w.safetensors')
    loaded = load_model(tmp_path / 'w.safetensors')
    assert loaded.config.whitening
    torch.testing.assert_close(loaded.descriptors(images)[0], expected)
    assert not any(p.requires_grad for p in model.whiten.parameters())


def test_whitening_needs_a_float_descriptor():
    with pytest.raises(ConfigError, match='no float head'):
        build_model(tiny(whitening=True, hashing=HashingConfig(bits=32, rerank=False)))
    with pytest.raises(ConfigError, match='two-branch'):
        build_model(tiny(whitening=True, whitening_input='float+hash'))


def test_float_plus_hash_whitening_reads_both_streams():
    torch.manual_seed(0)
    two_branch = dict(hashing=HashingConfig(bits=24, rerank=True))
    plain = build_model(tiny(**two_branch))
    model = build_model(tiny(whitening=True, whitening_input='float+hash', **two_branch))
    assert model.load_state_dict(plain.state_dict(), strict=False).missing_keys == \
        ['whiten.weight', 'whiten.bias']
    assert model.whiten.weight.shape == (32, 32 + 24)
    images = torch.randn(3, 3, 28, 28)
    z, signs, x_g = plain(images)
    floats, model_signs = model.descriptors(images)
    torch.testing.assert_close(floats, F.normalize(x_g, dim=-1))    # identity until fitted
    torch.testing.assert_close(model_signs, signs)                   # codes untouched
    weight, bias = torch.randn(32, 56), torch.randn(32)
    with torch.no_grad():
        model.whiten.weight.copy_(weight)
        model.whiten.bias.copy_(bias)
    both = torch.cat([F.normalize(x_g, dim=-1), z], dim=-1)
    torch.testing.assert_close(model.descriptors(images)[0],
                               F.normalize(both @ weight.T + bias, dim=-1))
    # The code z moves the float descriptor now: a different hashing branch, another float.
    other = build_model(tiny(whitening=True, whitening_input='float+hash', **two_branch))
    state = model.state_dict()
    state['linear4.weight'] = torch.randn_like(state['linear4.weight'])
    other.load_state_dict(state)
    assert not torch.allclose(other.descriptors(images)[0], model.descriptors(images)[0])


def test_whitening_can_keep_the_leading_axes_only():
    x, groups = seasons()
    full, full_bias = fit_whitening(x, groups, shrinkage=0.1)
    weight, bias = fit_whitening(x, groups, shrinkage=0.1, out_dim=6)
    assert weight.shape == (6, 16) and bias.shape == (6,)
    np.testing.assert_allclose(weight, full[:6])
    np.testing.assert_allclose(bias, full_bias[:6])
    with pytest.raises(ConfigError, match='out_dim'):
        fit_whitening(x, groups, out_dim=17)


def strip_code(linear_in, gem, linear_out, grid, columns):
    """Hand-written: the head's map over ``columns``, L2 per location, GeM, Linear, L2."""
    x = F.normalize(linear_in(grid)[:, :, columns], dim=-1)
    pooled = x.clamp(min=1e-6).pow(gem.p).mean(dim=(1, 2)).pow(1.0 / gem.p)
    return F.normalize(linear_out(pooled), dim=-1)


def test_strips_join_the_whitening_input_after_both_streams():
    torch.manual_seed(0)
    two_branch = dict(hashing=HashingConfig(bits=24, rerank=True))
    model = build_model(tiny(whitening=True, whitening_input='float+hash', whitening_strips=2,
                             **two_branch))
    plain = build_model(tiny(**two_branch))
    assert plain.load_state_dict(model.state_dict(), strict=False) == ([], ['whiten.weight',
                                                                            'whiten.bias'])
    assert model.whiten.weight.shape == (32, 3 * (32 + 24))
    images = torch.randn(3, 3, 28, 28)
    z, signs, x_g = plain(images)
    torch.testing.assert_close(model.descriptors(images)[1], signs)   # codes untouched
    weight, bias = torch.randn(32, 168), torch.randn(32)
    with torch.no_grad():
        model.whiten.weight.copy_(weight)
        model.whiten.bias.copy_(bias)
        tokens = model.stream_tokens(images)
        grid_f, grid_h = tokens['float'].patch_grid(), tokens['hash'].patch_grid()
        assert grid_f.shape[1:3] == (2, 2)       # 28 x 28 at patch 14: one column per strip
        float_strips = [strip_code(model.linear1, model.aggregation[1], model.linear2, grid_f,
                                   slice(c, c + 1)) for c in range(2)]
        hash_strips = [strip_code(model.linear3, model.aggregation_hashing[1], model.linear4,
                                  grid_h, slice(c, c + 1)) for c in range(2)]
        reference = torch.cat([F.normalize(x_g, dim=-1), z] + float_strips + hash_strips, -1)
        expected = F.normalize(reference @ weight.T + bias, dim=-1)
    torch.testing.assert_close(model.descriptors(images)[0], expected)


def test_strips_need_the_gem_head_and_fit_the_grid():
    with pytest.raises(ConfigError, match='whitening_strips needs'):
        build_model(tiny(whitening_strips=2))
    with pytest.raises(ConfigError, match='whitening_strips needs'):
        build_model(tiny(whitening=True, whitening_strips=2,
                         head=HeadConfig(kind='boq', out_dim=32)))
    with pytest.raises(ConfigError, match='>= 0'):
        build_model(tiny(whitening=True, whitening_strips=-1))
    model = build_model(tiny(whitening=True, whitening_strips=3))   # 2 token columns
    with pytest.raises(ValueError, match='2 token columns into 3 strips'):
        model.descriptors(torch.randn(1, 3, 28, 28))


def test_float_only_strips_and_uneven_bands():
    torch.manual_seed(0)
    model = build_model(tiny(whitening=True, whitening_strips=2,
                             preprocess=PreprocessConfig(train_size=(28, 42),
                                                         test_size=(28, 42))))
    assert model.whiten.weight.shape == (32, 3 * 32)
    images = torch.randn(2, 3, 28, 42)                           # 3 token columns: 2 + 1
    with torch.no_grad():
        grid = model.stream_tokens(images)['float'].patch_grid()
        parts = [strip_code(model.linear1, model.aggregation[1], model.linear2, grid, columns)
                 for columns in (slice(0, 2), slice(2, 3))]
        x_g = model.float_head(model.stream_tokens(images)['float'])
        reference = torch.cat([F.normalize(x_g, dim=-1)] + parts, -1)
    whitening_input = []
    model.whiten.register_forward_pre_hook(lambda module, args: whitening_input.append(args[0]))
    model.descriptors(images)
    torch.testing.assert_close(whitening_input[0], reference)


def test_the_whitening_is_a_stage_after_the_heads():
    """The heads are the published ones; the stage holds the only ``whiten.*`` parameters."""
    from vpr_core.model.aggregators.gem import SelaGeMHead
    from vpr_core.model.hashing import HashingHead
    from vpr_core.model.whitening import StripWhitening, Whitening
    two_branch = dict(hashing=HashingConfig(bits=24, rerank=True))
    assert build_model(tiny(**two_branch)).post is None
    model = build_model(tiny(whitening=True, whitening_input='float+hash', whitening_strips=2,
                             **two_branch))
    assert type(model.float_head) is SelaGeMHead and type(model.hashing_head) is HashingHead
    assert isinstance(model.post, StripWhitening) and model.whiten is model.post.whiten
    whiten_keys = [k for k in model.state_dict() if k.startswith('whiten')]
    assert whiten_keys == ['whiten.weight', 'whiten.bias']
    plain = build_model(tiny(whitening=True))
    assert type(plain.post) is Whitening and not plain.post.with_code
