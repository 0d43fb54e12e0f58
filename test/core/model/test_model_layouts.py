"""Released checkpoint layouts (SelaVPR++, SuperVLAD, HAM-VPR) and the foreign-file loader."""
import numpy as np
import pytest
import torch

from test_model_backbone import official_keys
from vpr_core.errors import CheckpointError, WeightsNotFoundError
from vpr_core.model.backbone import DinoVisionTransformer
from vpr_core.model.factory import build_model, ham_vpr, selavpr_plusplus, supervlad
from vpr_core.model.foreign import load_foreign_weights, load_foundation_weights

# MulConvAdapter widths from the spec: (C, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5).
WIDTHS = {768: (384, 192, 24, 96, 24, 96), 1024: (512, 256, 32, 128, 32, 128)}


def conv_bn(prefix, out_ch, in_ch, k):
    keys = {f'{prefix}.conv.weight': (out_ch, in_ch, k, k), f'{prefix}.conv.bias': (out_ch,)}
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
        keys[f'{prefix}.bn.{name}'] = (out_ch,)
    keys[f'{prefix}.bn.num_batches_tracked'] = ()
    return keys


def mulconv_keys(prefix, d):
    c, ch1, red3, ch3, red5, ch5 = WIDTHS[d]
    keys = {f'{prefix}.D_fc1.weight': (c, d), f'{prefix}.D_fc1.bias': (c,),
            f'{prefix}.D_fc2.weight': (d, c), f'{prefix}.D_fc2.bias': (d,)}
    keys.update(conv_bn(f'{prefix}.branch1', ch1, c, 1))
    keys.update(conv_bn(f'{prefix}.branch2.0', red3, c, 1))
    keys.update(conv_bn(f'{prefix}.branch2.1', ch3, red3, 3))
    keys.update(conv_bn(f'{prefix}.branch3.0', red5, c, 1))
    keys.update(conv_bn(f'{prefix}.branch3.1', ch5, red5, 5))
    return keys


def selavpr_keys(size, hashing, rerank):
    """The released SelaVPR++ state dict (spec section 3.8), ``module.`` stripped."""
    d, n_adapters, out = {'base': (768, 12, 2048), 'large': (1024, 16, 4096)}[size]
    keys = {f'backbone.{k}': v for k, v in official_keys(size, False).items()}
    streams = (['adapters'] if not hashing or rerank else []) + (['adapters_hashing'] if hashing
                                                                 else [])
    for stream in streams:
        for j in range(n_adapters):
            keys.update(mulconv_keys(f'backbone.{stream}.{j}', d))
    if 'adapters' in streams:
        keys.update({'aggregation.1.p': (1,), 'linear1.weight': (d, d), 'linear1.bias': (d,),
                     'linear2.weight': (out, d), 'linear2.bias': (out,)})
    if hashing:
        keys.update({'aggregation_hashing.1.p': (1,), 'linear3.weight': (d, d),
                     'linear3.bias': (d,), 'linear4.weight': (512, d), 'linear4.bias': (512,)})
    return keys


def supervlad_keys(clusters, ghosts, encoder):
    keys = {f'backbone.{k}': v for k, v in official_keys('base', False).items()}
    keys['aggregation.conv.weight'] = (clusters + ghosts, 768, 1, 1)
    for n in range(2 if encoder else 0):
        p = f'encoder.layers.{n}.'
        keys.update({p + 'self_attn.in_proj_weight': (2304, 768),
                     p + 'self_attn.in_proj_bias': (2304,),
                     p + 'self_attn.out_proj.weight': (768, 768),
                     p + 'self_attn.out_proj.bias': (768,),
                     p + 'linear1.weight': (2048, 768), p + 'linear1.bias': (2048,),
                     p + 'linear2.weight': (768, 2048), p + 'linear2.bias': (768,),
                     p + 'norm1.weight': (768,), p + 'norm1.bias': (768,),
                     p + 'norm2.weight': (768,), p + 'norm2.bias': (768,)})
    return keys


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize('size', ['base', 'large'])
@pytest.mark.parametrize('hashing, rerank', [(False, True), (True, True), (True, False)])
def test_selavpr_layouts_are_the_released_ones(size, hashing, rerank):
    with torch.device('meta'):
        model = selavpr_plusplus(backbone=f'dinov2-{size}', hashing=hashing, rerank=rerank)
    assert shapes(model) == selavpr_keys(size, hashing, rerank)


def test_selavpr_large_two_branch_has_1601_tensors():
    with torch.device('meta'):
        model = selavpr_plusplus(backbone='dinov2-large')
    assert len(model.state_dict()) == 1_601


@pytest.mark.parametrize('clusters, ghosts, encoder', [(4, 1, True), (4, 1, False),
                                                       (1, 2, False)])
def test_supervlad_layouts_are_the_released_ones(clusters, ghosts, encoder):
    with torch.device('meta'):
        model = supervlad(clusters=clusters, ghost_clusters=ghosts, crossimage_encoder=encoder)
    assert shapes(model) == supervlad_keys(clusters, ghosts, encoder)


def test_ham_layout():
    with torch.device('meta'):
        model = ham_vpr()
    ours = shapes(model)
    expected = {f'backbone.{k}': v for k, v in official_keys('large', False).items()}
    for k in range(18, 24):
        for a in ('adapter1', 'adapter2'):
            p = f'backbone.blocks.{k}.{a}.'
            expected.update({p + 'D_fc1.weight': (512, 1024), p + 'D_fc1.bias': (512,),
                             p + 'D_fc2.weight': (1024, 512), p + 'D_fc2.bias': (1024,),
                             p + 'norm1.weight': (512,), p + 'norm1.bias': (512,),
                             p + 'norm2.weight': (1024,), p + 'norm2.bias': (1024,)})
    expected['amg_gem.p'] = (1024,)
    head = {k for k in ours if k.startswith('attention_unet.')}
    assert head and {k: v for k, v in ours.items() if k not in head} == expected


def released_file(path, keys, extra=True):
    state = {f'module.{k}': (torch.randn(s) if s else torch.tensor(7)) for k, s in keys.items()}
    payload = {'model_state_dict': state}
    if extra:
        payload.update(epoch_num=3, recalls=np.array([93.3, 97.0, 98.1, 99.5]),
                       best_r5=np.float64(97.0), not_improved_num=0, optimizer_state_dict={})
    torch.save(payload, path)
    return {k[len('module.'):]: v for k, v in state.items()}


def test_released_selavpr_base_two_branch_file_loads(tmp_path):
    path = tmp_path / 'SelaVPRplusplus_base_rerank.pth'
    state = released_file(path, selavpr_keys('base', True, True))
    model = selavpr_plusplus(backbone='dinov2-base', weights=path)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    z, b, x_g = model(torch.randn(1, 3, 28, 28))
    assert (z.shape, b.shape, x_g.shape) == ((1, 512), (1, 512), (1, 2048))


def test_released_supervlad_file_loads(tmp_path):
    path = tmp_path / 'SuperVLAD.pth'
    state = released_file(path, supervlad_keys(4, 1, True), extra=False)
    with torch.device('meta'):
        model = supervlad()
    model = model.to_empty(device='cpu')
    load_foreign_weights(model, path)
    loaded = model.state_dict()
    for key in ('aggregation.conv.weight', 'encoder.layers.1.linear2.weight',
                'backbone.blocks.11.mlp.fc2.weight'):
        assert torch.equal(loaded[key], state[key])


def test_key_mismatch_error_names_keys_counts_and_file(tiny, tmp_path):
    model = build_model(tiny(adapter='mulconv'))
    state = {k: v for k, v in model.state_dict().items() if 'adapters.0.' not in k}
    state.update({f'extra.{i}': torch.zeros(1) for i in range(12)})
    path = tmp_path / 'broken.pth'
    torch.save({'model_state_dict': state}, path)
    with pytest.raises(CheckpointError) as error:
        load_foreign_weights(model, path)
    message = str(error.value)
    assert 'broken.pth' in message and 'missing keys 39:' in message
    assert 'backbone.adapters.0.D_fc1.weight' in message
    assert 'unexpected keys 12:' in message and '(+2 more)' in message


def test_shape_mismatch_is_reported(tiny, tmp_path):
    model = build_model(tiny())
    state = model.state_dict()
    state['linear2.weight'] = torch.zeros(5, 64)
    torch.save(state, tmp_path / 'shape.pth')
    with pytest.raises(CheckpointError, match=r'linear2.weight \[5, 64\] vs \[32, 64\]'):
        load_foreign_weights(model, tmp_path / 'shape.pth')


def test_missing_and_corrupt_files(tiny, tmp_path):
    model = build_model(tiny())
    with pytest.raises(WeightsNotFoundError, match='nowhere.pth'):
        load_foreign_weights(model, tmp_path / 'nowhere.pth')
    good = tmp_path / 'good.pth'
    torch.save(model.state_dict(), good)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match='truncated.pth'):
        load_foreign_weights(model, truncated)
    (tmp_path / 'text.pth').write_text('not a checkpoint')
    with pytest.raises(CheckpointError, match='text.pth'):
        load_foreign_weights(model, tmp_path / 'text.pth')


def test_foundation_weights_merge_keeps_adapter_init(tiny, tmp_path):
    model = build_model(tiny(adapter='mulconv', bits=16))
    vit = DinoVisionTransformer(model.config.backbone)
    path = tmp_path / 'foundation.pth'
    torch.save(vit.state_dict(), path)
    adapters_before = {k: v.clone() for k, v in model.backbone.state_dict().items()
                       if 'adapter' in k}
    load_foundation_weights(model.backbone, path)
    after = model.backbone.state_dict()
    assert all(torch.equal(after[k], v) for k, v in vit.state_dict().items())
    assert all(torch.equal(after[k], v) for k, v in adapters_before.items())
    with pytest.raises(CheckpointError, match='foundation_weights'):
        load_foreign_weights(model, path)


def test_foundation_weights_with_registers_into_plain_model_fail(tiny, tmp_path):
    model = build_model(tiny(adapter='mulconv'))
    vit = DinoVisionTransformer(build_model(tiny(registers=4)).config.backbone)
    torch.save(vit.state_dict(), tmp_path / 'reg.pth')
    with pytest.raises(CheckpointError, match='unexpected keys 1: register_tokens'):
        load_foundation_weights(model.backbone, tmp_path / 'reg.pth')
