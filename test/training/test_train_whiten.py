"""Stage ``whiten``: the closed-form whitening fitted on a trained model's training places."""
import dataclasses
import json

import pytest
import torch

from training.run import train
from vpr_core.errors import ConfigError
from vpr_core.model.checkpoint import load_model


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
