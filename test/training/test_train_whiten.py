"""Stage ``whiten``: the closed-form whitening fitted on a trained model's training places."""
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import factory
from training.run import train
from vpr_core.errors import ConfigError
from vpr_core.model.checkpoint import load_model, save_model
from vpr_core.model.factory import build_model
from vpr_core.model.whitening import fit_whitening
from vpr_core.preprocess import preprocess_batch


@pytest.fixture
def trained(sequence_config, tmp_path):
    """A float model trained for one epoch on the tiny route, and its config."""
    cfg = sequence_config(epochs=1)
    train(cfg, tmp_path / 'float')
    return cfg, tmp_path / 'float' / 'best.safetensors'


def whiten_config(cfg, weights):
    return dataclasses.replace(cfg, stage='whiten', init_from=str(weights),
                               model=dataclasses.replace(cfg.model, whitening=True))


def test_whitening_is_fitted_and_kept_only_if_validation_rises(trained, tmp_path):
    cfg, weights = trained
    progress = train(whiten_config(cfg, weights), tmp_path / 'whiten')
    info = json.loads((tmp_path / 'whiten' / 'run.json').read_text())['whitening']
    assert info['places'] == 16 and info['images'] == 32     # exact frames: 2 per place
    assert info['kept'] == (info['score_with'] > info['score_without'])
    model = load_model(tmp_path / 'whiten' / 'best.safetensors')
    assert model.config.whitening
    identity = torch.equal(model.whiten.weight, torch.eye(32)) and \
        not model.whiten.bias.any()
    assert identity != info['kept']
    assert progress['best_score'] == (info['score_with'] if info['kept'] else
                                      info['score_without'])
    # Every other tensor is the trained model's.
    source = load_model(weights).state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith('whiten.'):
            assert torch.equal(value, source[name]), name


@pytest.mark.parametrize('scores, kept', [((1.0, 1.5), True), ((1.5, 1.0), False)])
def test_the_validation_score_decides(trained, tmp_path, monkeypatch, scores, kept):
    from training.loop import Validation
    calls = iter(scores)
    monkeypatch.setattr(Validation, 'run', lambda self, model, device, batch_size: {
        'recall_at': {'1': 0.5}, 'score': next(calls)})
    cfg, weights = trained
    progress = train(whiten_config(cfg, weights), tmp_path / 'whiten')
    assert progress['whitening']['kept'] is kept and progress['best_score'] == max(scores)
    model = load_model(tmp_path / 'whiten' / 'best.safetensors')
    assert torch.equal(model.whiten.weight, torch.eye(32)) is not kept


def test_whitening_refuses_a_checkpoint_of_another_architecture(trained, tmp_path):
    cfg, weights = trained
    other = whiten_config(cfg, weights)
    other = dataclasses.replace(other, model=dataclasses.replace(
        other.model, head=dataclasses.replace(other.model.head, out_dim=16)))
    with pytest.raises(ConfigError, match='different architecture'):
        train(other, tmp_path / 'other')
    with pytest.raises(ConfigError, match='model.whitening: true'):
        train(dataclasses.replace(whiten_config(cfg, weights), model=cfg.model),
              tmp_path / 'plain')


def test_float_plus_hash_whitening_is_fitted_on_both_streams(sequence_config, tmp_path,
                                                             monkeypatch):
    """Stage whiten on a two-branch model whitens [unit x_g, z] of the exact training frames
    down to the float width (kept here by forcing the validation scores)."""
    from training.loop import Validation
    scores = iter((1.0, 1.5))
    monkeypatch.setattr(Validation, 'run', lambda self, model, device, batch_size: {
        'recall_at': {'1': 0.5}, 'score': next(scores)})
    cfg = sequence_config()
    two_branch = dataclasses.replace(cfg.model, hashing=dataclasses.replace(
        cfg.model.hashing, bits=24, rerank=True))
    torch.manual_seed(0)
    source = build_model(two_branch)
    save_model(source, tmp_path / 'two_branch.safetensors')
    whiten_cfg = dataclasses.replace(
        cfg, stage='whiten', init_from=str(tmp_path / 'two_branch.safetensors'),
        model=dataclasses.replace(two_branch, whitening=True, whitening_input='float+hash'))
    train(whiten_cfg, tmp_path / 'whiten')
    model = load_model(tmp_path / 'whiten' / 'best.safetensors')
    assert model.whiten.weight.shape == (32, 32 + 24)
    # The same fit from the source model's own outputs on the exact frames of every place.
    places = factory.places(whiten_cfg)
    frames = [files[:places.leading] for files in places.places]
    batch = preprocess_batch([places.image(path) for files in frames for path in files],
                             source.config.preprocess)
    with torch.no_grad():
        z, _, x_g = source(batch)
    inputs = torch.cat([F.normalize(x_g, dim=-1), z], dim=-1).numpy()
    offsets = np.cumsum([0] + [len(files) for files in frames])
    groups = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(frames))]
    weight, bias = fit_whitening(inputs, groups, whiten_cfg.whitening_shrinkage, out_dim=32)
    # Compared through the Gram matrix of the whitened frames: 32 images span 31 axes, so the
    # axes beyond and the signs of all are arbitrary in either fit.
    fitted = inputs @ model.whiten.weight.numpy().T + model.whiten.bias.numpy()
    reference = inputs @ weight.T + bias
    scale = np.abs(reference @ reference.T).max()
    np.testing.assert_allclose(fitted @ fitted.T / scale, reference @ reference.T / scale,
                               atol=1e-4)


def test_refitting_a_whitened_checkpoint_starts_from_its_unwhitened_descriptors(
        trained, tmp_path, monkeypatch):
    """init_from may be an already whitened model (of fewer or no strips): the score without
    whitening is taken with the identity, and the fit is the one from the plain model."""
    from training.loop import Validation
    seen = []

    def run(self, model, device, batch_size):
        seen.append(torch.equal(model.whiten.bias, torch.zeros_like(model.whiten.bias)))
        return {'recall_at': {'1': 0.5}, 'score': float(len(seen) % 2 == 0)}   # 0, then 1
    monkeypatch.setattr(Validation, 'run', run)
    cfg, weights = trained
    strips = whiten_config(cfg, weights)
    strips = dataclasses.replace(strips, model=dataclasses.replace(strips.model,
                                                                   whitening_strips=2))
    train(whiten_config(cfg, weights), tmp_path / 'plain')
    train(strips, tmp_path / 'first')
    train(dataclasses.replace(strips, init_from=str(tmp_path / 'plain' / 'best.safetensors')),
          tmp_path / 'from_plain')
    train(dataclasses.replace(strips, init_from=str(tmp_path / 'first' / 'best.safetensors')),
          tmp_path / 'again')
    assert seen[0::2] == [True] * 4                  # every "before" ran unwhitened
    first, again, from_plain = (load_model(tmp_path / name / 'best.safetensors')
                                for name in ('first', 'again', 'from_plain'))
    assert first.whiten.weight.shape == (32, 3 * 32) and first.whiten.bias.any()
    for model in (again, from_plain):
        torch.testing.assert_close(model.whiten.weight, first.whiten.weight)
        torch.testing.assert_close(model.whiten.bias, first.whiten.bias)
