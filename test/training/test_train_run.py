"""End-to-end training runs on tiny trees made here: loss falls, resume, stage 2 invariance."""
import csv
import dataclasses

import pytest
import torch

from training.config import AugmentConfig, DataConfig, OptimConfig, SamplerConfig, TrainConfig
from training.run import train
from training.stage import float_branch_state
from vpr_core.model.checkpoint import load_model, read_metadata, save_model
from vpr_core.model.factory import build_model


def gsv_config(model, root, out_dir, **changes) -> TrainConfig:
    cfg = TrainConfig(
        model=model, stage='float',
        data=DataConfig(kind='gsv_cities', root=str(root)),
        sampler=SamplerConfig(places_per_batch=8, images_per_place=4, shuffle=False),
        augment=AugmentConfig(kind='none'), optim=OptimConfig(lr=1e-3),
        epochs=2, steps_per_epoch=1, out_dir=str(out_dir), amp=False)
    return dataclasses.replace(cfg, **changes)


def history(run_dir):
    with (run_dir / 'history.csv').open() as handle:
        return list(csv.DictReader(handle))


def test_two_steps_on_a_gsv_cities_tree_lower_the_loss(gsv_tree, tmp_path, tiny_config):
    run_dir = tmp_path / 'run'
    train(gsv_config(tiny_config(), gsv_tree, tmp_path), run_dir)
    rows = history(run_dir)
    assert [int(r['steps']) for r in rows] == [1, 1]
    first, second = (float(r['loss']) for r in rows)
    assert second < first
    model = load_model(run_dir / 'best.safetensors')
    assert model.out_dim == 32
    for name in ('config.yaml', 'run.json', 'curves.png', 'train_state.safetensors'):
        assert (run_dir / name).is_file()


def test_resume_continues_exactly(gsv_tree, tmp_path, tiny_config):
    straight = tmp_path / 'straight'
    train(gsv_config(tiny_config(), gsv_tree, tmp_path, epochs=3), straight)
    split = tmp_path / 'split'
    train(gsv_config(tiny_config(), gsv_tree, tmp_path, epochs=2), split)
    train(gsv_config(tiny_config(), gsv_tree, tmp_path, epochs=3), split, resume=True)
    assert [r['loss'] for r in history(split)] == [r['loss'] for r in history(straight)]
    a = load_model(straight / 'last.safetensors').state_dict()
    b = load_model(split / 'last.safetensors').state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize('freeze_bn_stats, stem', [(True, 'patch'), (False, 'patch'),
                                                   (True, 'conv'), (True, 'vgg')])
def test_stage2_leaves_the_float_branch_unchanged(gsv_tree, tmp_path, freeze_bn_stats, stem,
                                                  tiny_config):
    torch.manual_seed(3)
    stage1 = build_model(tiny_config(stem=stem))
    with torch.no_grad():
        for param in stage1.parameters():
            param.add_(0.01 * torch.randn_like(param))     # "trained" float weights
    stage1_path = tmp_path / 'stage1.safetensors'
    save_model(stage1, stage1_path)
    cfg = gsv_config(tiny_config(bits=32, stem=stem), gsv_tree, tmp_path, stage='rerank',
                     init_from=str(stage1_path), freeze_bn_stats=freeze_bn_stats)
    run_dir = tmp_path / 'stage2'
    train(cfg, run_dir)
    result = load_model(run_dir / 'last.safetensors')
    before = stage1.state_dict()
    after = float_branch_state(result)
    params = dict(result.named_parameters())
    for name, tensor in after.items():
        if name in params or freeze_bn_stats:
            assert torch.equal(tensor, before[name]), name
    drifted = [n for n, t in after.items() if not torch.equal(t, before[n])]
    # The seeds' behaviour (frozen BNs in train mode) moves only running statistics.
    assert bool(drifted) != freeze_bn_stats
    assert all(n.endswith(('running_mean', 'running_var', 'num_batches_tracked'))
               for n in drifted)
    hashing = result.backbone.adapters_hashing.state_dict()
    floats = result.backbone.adapters.state_dict()
    assert any(not torch.equal(hashing[k], floats[k]) for k in hashing)   # it trained


def test_sequence_training_validates_and_selects(sequence_config, tmp_path):
    cfg = sequence_config()
    progress = train(cfg, tmp_path / 'seq')
    rows = history(tmp_path / 'seq')
    assert all(0.0 <= float(r['val_r1']) <= 1.0 for r in rows)
    best = max(range(len(rows)), key=lambda i: float(rows[i]['val_score']))
    assert progress['best_epoch'] == int(rows[best]['epoch'])
    meta = read_metadata(tmp_path / 'seq' / 'best.safetensors')
    assert meta.extra['training']['epoch'] == progress['best_epoch']


@pytest.mark.parametrize('stem', ['conv', 'vgg'])
def test_a_conv_stem_trains_in_stage_1_and_stays_frozen_in_stage_2(tiny_config, stem):
    from training.stage import default_trainable
    model = build_model(tiny_config(bits=32, stem=stem))
    stem = {n for n, _ in model.named_parameters() if n.startswith('backbone.patch_embed.')}
    assert stem and stem <= default_trainable(model, 'float')
    assert not stem & default_trainable(model, 'rerank')
