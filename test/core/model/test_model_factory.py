"""Public factories mirroring the seeds' entry points, and their configurations."""
import pytest
import torch

from vpr_core.config import from_dict, to_dict
from vpr_core.errors import CheckpointError, ConfigError
from vpr_core.model.config import ModelConfig
from vpr_core.model.factory import (build_model, dinov2, from_weights, ham_vpr,
                                    ham_vpr_config, selavpr_plusplus, selavpr_plusplus_config,
                                    supervlad, supervlad_config)


def on_meta(factory, **kwargs):
    with torch.device('meta'):
        return factory(**kwargs)


def meta_images(side, batch=2):
    return torch.empty(batch, 3, side, side, device='meta')


@pytest.mark.parametrize('backbone, width', [('dinov2-base', 2048), ('dinov2-large', 4096)])
def test_selavpr_outputs_match_the_authors_model(backbone, width):
    images = meta_images(322)
    two = on_meta(selavpr_plusplus, backbone=backbone)
    z, b, x_g = two(images)
    assert (z.shape, b.shape, x_g.shape) == ((2, 512), (2, 512), (2, width))
    assert (two.out_dim, two.code_bits, two.outputs) == (width, 512, 'two_branch')
    floats = on_meta(selavpr_plusplus, backbone=backbone, hashing=False)
    assert floats(images).shape == (2, width) and floats.code_bits == 0
    hashing = on_meta(selavpr_plusplus, backbone=backbone, rerank=False)
    z, b = hashing(images)
    assert b.shape == (2, 512) and hashing.out_dim == 0 and hashing.outputs == 'hash'


@pytest.mark.parametrize('aggregation, width', [('boq', 12_288), ('salad', 8_448)])
def test_selavpr_boq_and_salad_widths(aggregation, width):
    model = on_meta(selavpr_plusplus, aggregation=aggregation, hashing=False)
    assert model(meta_images(224)).shape == (2, width) and model.out_dim == width


def test_supervlad_widths():
    assert on_meta(supervlad)(meta_images(322)).shape == (2, 3_072)
    one = on_meta(supervlad, clusters=1, ghost_clusters=2, crossimage_encoder=False)
    assert one(meta_images(322)).shape == (2, 768) and not one.batch_dependent
    assert on_meta(supervlad).batch_dependent


def test_ham_and_dinov2_outputs():
    assert on_meta(ham_vpr)(meta_images(224)).shape == (2, 1024)
    plain = on_meta(dinov2, size='small', registers=True)
    assert plain(meta_images(224)).shape == (2, 384) and plain.config.system == 'dinov2'
    assert plain.backbone.num_register_tokens == 4


def test_preprocessing_of_each_system():
    sela = selavpr_plusplus_config()
    assert (sela.preprocess.train_size, sela.preprocess.test_size) == ((224, 224), (322, 322))
    vlad = supervlad_config()
    assert vlad.preprocess.test_size == (322, 322) and vlad.preprocess.infer_batch_size == 8
    assert vlad.backbone.train_blocks_from == 8
    ham = ham_vpr_config()
    assert (ham.preprocess.train_size, ham.preprocess.test_size) == ((224, 224), (224, 224))
    assert ham.adapter.kind == 'serial_parallel' and ham.adapter.last_blocks == 6


@pytest.mark.parametrize('cfg', [selavpr_plusplus_config(), supervlad_config(),
                                 ham_vpr_config(), selavpr_plusplus_config(aggregation='salad')])
def test_configs_round_trip_through_the_config_loader(cfg):
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg


def test_factories_are_keyword_only_and_validate_names():
    with pytest.raises(TypeError):
        selavpr_plusplus('dinov2-base')
    with pytest.raises(ConfigError, match='dinov2-base'):
        selavpr_plusplus_config(backbone='resnet50')
    with pytest.raises(ConfigError, match='gem, boq, salad'):
        selavpr_plusplus_config(aggregation='netvlad')
    with pytest.raises(ConfigError, match='small, base, large, giant'):
        dinov2(size='huge')


def test_build_model_attributes(tiny):
    model = build_model(tiny(bits=16))
    assert model.config.hashing.bits == 16 and model.embed_dim == 64
    assert not model.training


def test_our_checkpoint_is_loaded_through_checkpoint_module(tiny, tmp_path):
    from vpr_core.model.checkpoint import save_model
    model = build_model(tiny(adapter='mulconv', bits=16))
    path = tmp_path / 'tiny.safetensors'
    save_model(model, path)
    loaded = from_weights(model.config, path)
    assert torch.equal(loaded.backbone.pos_embed, model.backbone.pos_embed)
    with pytest.raises(CheckpointError, match='not the requested'):
        from_weights(tiny(adapter='mulconv'), path)


def test_foundation_and_full_weights_through_from_weights(tiny, tmp_path):
    model = build_model(tiny(head='supervlad'))
    torch.save({'model_state_dict': {f'module.{k}': v for k, v in model.state_dict().items()}},
               tmp_path / 'released.pth')
    torch.save(model.backbone.state_dict(), tmp_path / 'dinov2.pth')
    images = torch.randn(2, 3, 28, 28)
    full = from_weights(model.config, tmp_path / 'released.pth')
    torch.testing.assert_close(full(images), model(images), rtol=0, atol=0)
    backbone_only = from_weights(model.config, foundation_weights=tmp_path / 'dinov2.pth')
    assert torch.equal(backbone_only.backbone.norm.weight, model.backbone.norm.weight)


@pytest.mark.parametrize('kwargs, millions', [
    ({'backbone': 'dinov2-base', 'hashing': False}, 97.90),
    ({'backbone': 'dinov2-base'}, 108.04),
    ({'hashing': False}, 331.30),
    ({}, 354.55),
    ({'hashing': False, 'aggregation': 'boq'}, 335.56),
    ({'hashing': False, 'aggregation': 'salad'}, 327.85),
])
def test_selavpr_total_parameters_match_spec(kwargs, millions):
    model = on_meta(selavpr_plusplus, **kwargs)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions
