"""Aggregation heads and hashing: reference formulas and the published output widths."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vpr_core.errors import ConfigError, UnsupportedImageError
from vpr_core.model import aggregators  # noqa: F401
from vpr_core.model.config import HashingConfig, HeadConfig
from vpr_core.model.hashing import HashingHead, sign_ste
from vpr_core.model.layers import Tokens
from vpr_core.model.registry import HEADS
from vpr_core.model.variants import build_float_head, build_hashing_head


def random_tokens(batch, dim, grid, num_prefix=1):
    x = torch.randn(batch, num_prefix + grid[0] * grid[1], dim)
    return Tokens(x, grid, num_prefix)


def build_head(kind, dim, **changes):
    return HEADS.get(kind).from_config(HeadConfig(kind=kind, **changes), dim).eval()


def gem_reference(feature_map, p):
    return feature_map.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1 / p)


def test_gem_head_follows_the_spec_order():
    head = build_head('gem', 64, out_dim=32)
    with torch.no_grad():
        head.aggregation[1].p.fill_(2.5)
    tokens = random_tokens(2, 64, (3, 4), num_prefix=5)
    per_token = head.linear1(tokens.x[:, 5:]).reshape(2, 3, 4, 64).permute(0, 3, 1, 2)
    pooled = gem_reference(F.normalize(per_token, dim=1), 2.5)
    expected = F.normalize(head.linear2(pooled), dim=-1)
    torch.testing.assert_close(head(tokens), expected)


def test_gem_head_without_location_norm_pools_linear1_output():
    head = build_float_head(HeadConfig(kind='gem', out_dim=32, location_norm=False), 64).eval()
    with torch.no_grad():
        head.linear1.bias.zero_()       # so scaling a token scales Linear1's output
    published = build_head('gem', 64, out_dim=32)
    assert head.state_dict().keys() == published.state_dict().keys()
    tokens = random_tokens(2, 64, (3, 4))
    scaled = Tokens(tokens.x.clone(), tokens.grid, 1)
    scaled.x[:, 1] *= 10.0      # one location with ten times the response
    per_token = head.linear1(tokens.x[:, 1:]).reshape(2, 3, 4, 64).permute(0, 3, 1, 2)
    expected = F.normalize(head.linear2(gem_reference(per_token, 3.0)), dim=-1)
    torch.testing.assert_close(head(tokens), expected)
    # Without the per-location L2, a location's magnitude changes the descriptor.
    published.load_state_dict(head.state_dict())
    torch.testing.assert_close(published(scaled), published(tokens))
    assert (head(scaled) - head(tokens)).abs().max() > 0.05


@pytest.mark.parametrize('dim, width', [(768, 2048), (1024, 4096)])
def test_gem_output_width(dim, width):
    head = build_head('gem', dim)
    out = head(random_tokens(2, dim, (2, 2)))
    assert head.out_dim == width and out.shape == (2, width)
    assert head.aggregation[1].p.item() == 3.0 and head.aggregation[1].eps == 1e-6


@pytest.mark.parametrize('dim', [768, 1024])
def test_boq_output_width(dim):
    head = build_head('boq', dim)
    out = head(random_tokens(2, dim, (3, 3)))
    assert head.out_dim == 12_288 and out.shape == (2, 12_288)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    block = head.aggregation.boqs[0]
    assert block.encoder.self_attn.num_heads == 6 and block.queries.shape == (1, 64, 384)
    assert block.encoder.linear1.out_features == 1536 and not block.encoder.norm_first


def salad_reference(salad, feature_map, token):
    """SALAD as published: augmented score matrix, 3 log-Sinkhorn iterations, repeat + sum."""
    f = salad.cluster_features(feature_map).flatten(2)
    s = salad.score(feature_map).flatten(2)
    b, m, n = s.shape
    s_aug = torch.empty(b, m + 1, n)
    s_aug[:, :m] = s
    s_aug[:, m] = salad.dust_bin
    norm = -torch.tensor(math.log(n + m))
    log_a = norm.expand(m + 1).contiguous()
    log_a[-1] = log_a[-1] + math.log(n - m)
    log_a, log_b = log_a.expand(b, -1), norm.expand(n).contiguous().expand(b, -1)
    u, v = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(3):
        u = log_a - torch.logsumexp(s_aug + v.unsqueeze(1), dim=2).squeeze()
        v = log_b - torch.logsumexp(s_aug + u.unsqueeze(2), dim=1).squeeze()
    p = torch.exp(s_aug + u.unsqueeze(2) + v.unsqueeze(1) - norm)[:, :-1]
    agg = (f.unsqueeze(2).repeat(1, 1, m, 1) * p.unsqueeze(1).repeat(1, f.shape[1], 1, 1))
    t = salad.token_features(token)
    out = torch.cat([F.normalize(t, dim=-1), F.normalize(agg.sum(-1), dim=1).flatten(1)], -1)
    return F.normalize(out, dim=-1)


def test_salad_matches_published_algorithm():
    head = build_head('salad', 64, salad_clusters=6, salad_cluster_dim=8, salad_token_dim=16)
    tokens = random_tokens(2, 64, (3, 4))
    expected = salad_reference(head.aggregation, tokens.patch_map(), tokens.cls)
    torch.testing.assert_close(head(tokens), expected, rtol=1e-5, atol=1e-6)
    assert head.aggregation.dust_bin.item() == 1.0


def test_salad_output_width_and_small_input_error():
    head = build_head('salad', 768)
    out = head(random_tokens(1, 768, (9, 9)))
    assert head.out_dim == 8_448 and out.shape == (1, 8_448)
    with pytest.raises(UnsupportedImageError, match='more patches'):
        head(random_tokens(1, 768, (8, 8)))


def supervlad_reference(conv_weight, feature_map, clusters):
    x = F.normalize(feature_map, dim=1).flatten(2)                       # [B, D, N]
    assign = torch.softmax(torch.einsum('kd,bdn->bkn', conv_weight, x), dim=1)
    vlad = torch.stack([(x * assign[:, k:k + 1]).sum(-1) for k in range(assign.shape[1])], 1)
    vlad = F.normalize(vlad[:, :clusters], dim=2).flatten(1)
    return F.normalize(F.normalize(vlad, dim=1), dim=-1)


@pytest.mark.parametrize('clusters, ghosts, width', [(4, 1, 3_072), (1, 2, 768)])
def test_supervlad_matches_reference_and_widths(clusters, ghosts, width):
    head = build_head('supervlad', 768, clusters=clusters, ghost_clusters=ghosts)
    tokens = random_tokens(2, 768, (3, 3))
    out = head(tokens)
    assert head.out_dim == width and out.shape == (2, width)
    assert head.aggregation.conv.bias is None
    assert head.aggregation.conv.weight.shape == (clusters + ghosts, 768, 1, 1)
    expected = supervlad_reference(head.aggregation.conv.weight[:, :, 0, 0],
                                   tokens.patch_map(), clusters)
    torch.testing.assert_close(out, expected)


def test_supervlad_kmeans_alpha_rule():
    head = build_head('supervlad', 16, clusters=2, ghost_clusters=1)
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(3, 16)).astype(np.float32)
    descriptors = rng.normal(size=(50, 16)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    alpha = head.init_from_centroids(torch.from_numpy(centroids), torch.from_numpy(descriptors))
    assign = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    dots = np.sort(assign @ descriptors.T, axis=0)[::-1]
    expected = -np.log(0.01) / np.mean(dots[0] - dots[1])
    assert alpha == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(head.aggregation.conv.weight[:, :, 0, 0].detach().numpy(),
                               expected * assign, rtol=1e-5)
    with pytest.raises(ConfigError, match='centroids'):
        head.init_from_centroids(torch.zeros(2, 16), torch.from_numpy(descriptors))


def test_crossimage_encoder_mixes_the_batch_but_not_its_order():
    head = build_head('supervlad', 64, crossimage_encoder=True)
    assert head.batch_dependent
    layer = head.encoder.layers[0]
    assert (layer.self_attn.num_heads, layer.linear1.out_features, layer.dropout.p) \
        == (16, 2048, 0.1)
    assert not layer.norm_first and not layer.self_attn.batch_first
    tokens = random_tokens(4, 64, (2, 2))
    full = head(tokens)
    part = head(Tokens(tokens.x[:2], (2, 2), 1))
    assert not torch.allclose(full[:2], part, atol=1e-5)
    flipped = head(Tokens(tokens.x.flip(0), (2, 2), 1))
    torch.testing.assert_close(flipped.flip(0), full, rtol=1e-5, atol=1e-6)


def test_supervlad_without_encoder_is_batch_independent():
    head = build_head('supervlad', 64)
    tokens = random_tokens(4, 64, (2, 2))
    torch.testing.assert_close(head(tokens)[:2], head(Tokens(tokens.x[:2], (2, 2), 1)))


def test_amg_gem_head_reference():
    head = build_head('amg_gem', 32, mask_channels=8)
    with torch.no_grad():
        head.amg_gem.p.copy_(torch.linspace(1.5, 4.0, 32))
    tokens = random_tokens(2, 32, (4, 4))
    fmap = tokens.patch_map()
    unet = head.attention_unet
    e = unet.conv_in(fmap)
    mask = torch.sigmoid(unet.conv_out(e * torch.sigmoid(unet.W_g(e) + unet.W_x(e))))
    mask = mask.clamp(1e-6, 1 - 1e-6)
    p = head.amg_gem.p
    num = (mask * fmap.clamp(min=1e-6) ** p[None, :, None, None]).sum((2, 3))
    expected = F.normalize((num / (mask.sum((2, 3)) + 1e-6)) ** (1 / p), dim=1)
    torch.testing.assert_close(head(tokens), expected)
    assert build_head('amg_gem', 1024).out_dim == 1024


def test_ste_sign_and_identity_gradient():
    z = torch.tensor([[-0.5, 0.0, 0.3, -1e-8]], requires_grad=True)
    b = sign_ste(z)
    assert b.tolist() == [[-1.0, 1.0, 1.0, -1.0]]
    upstream = torch.tensor([[0.1, -2.0, 3.0, 5.0]])
    b.backward(upstream)
    assert torch.equal(z.grad, upstream)
    with torch.no_grad():
        assert sign_ste(z).tolist() == [[-1.0, 1.0, 1.0, -1.0]]


def test_hashing_head_codes():
    head = HashingHead(64, 512)
    with torch.no_grad():
        head.aggregation_hashing[1].p.fill_(2.0)
    tokens = random_tokens(3, 64, (2, 3))
    z, b = head(tokens)
    assert z.shape == b.shape == (3, 512)
    assert set(b.unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    grid = head.linear3(tokens.patch_grid()).permute(0, 3, 1, 2)
    expected = F.normalize(head.linear4(gem_reference(F.normalize(grid, dim=1), 2.0)), dim=-1)
    torch.testing.assert_close(z, expected)
    assert torch.equal(b, torch.where(expected >= 0, 1.0, -1.0))


def test_hashing_head_without_location_norm():
    head = build_hashing_head(HashingConfig(bits=128, location_norm=False), 64)
    assert head.state_dict().keys() == HashingHead(64, 128).state_dict().keys()
    tokens = random_tokens(2, 64, (2, 3))
    grid = head.linear3(tokens.patch_grid()).permute(0, 3, 1, 2)
    expected = F.normalize(head.linear4(gem_reference(grid, 3.0)), dim=-1)
    torch.testing.assert_close(head(tokens)[0], expected)


def test_unknown_head_lists_valid_names():
    with pytest.raises(ConfigError, match='amg_gem, boq, cls, gem, salad, supervlad'):
        HEADS.get('netvlad')
