"""torch.hub entry points from the repository root (architectures built on the meta device)."""
import logging
from pathlib import Path

import pytest
import torch

from vpr_core.errors import ConfigError, WeightsNotFoundError

ROOT = Path(__file__).resolve().parents[3]


def _hub(entry, **kwargs):
    return torch.hub.load(str(ROOT), entry, source='local', **kwargs)


def _million(model):
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 2)


def test_selavpr_plusplus_seed_arguments_build_the_released_layout():
    with torch.device('meta'):
        model = _hub('SelaVPRplusplus', backbone='dinov2-base', resume=False)
    assert (model.outputs, model.out_dim, model.code_bits) == ('two_branch', 2048, 512)
    assert _million(model) == 108.04            # spec: B-gem two-branch 108.04 M
    state = model.state_dict()
    assert tuple(state['linear4.weight'].shape) == (512, 768)
    assert 'aggregation.1.p' in state and 'backbone.adapters_hashing.11.D_fc2.bias' in state


def test_resume_without_the_released_file_names_it(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        _hub('SelaVPRplusplus', backbone='dinov2-base', resume=True, cache_dir=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / 'SelaVPRplusplus_base_rerank.pth') in message
    assert 'vpr download-weights SelaVPRplusplus_base_rerank' in message
    with pytest.raises(WeightsNotFoundError, match='SelaVPRplusplus_large.pth'):
        _hub('SelaVPRplusplus', hashing=False, cache_dir=str(tmp_path))


def test_combinations_without_released_weights_say_so():
    with pytest.raises(ConfigError, match='no released SelaVPR\\+\\+ checkpoint'):
        _hub('SelaVPRplusplus', hashing=True, rerank=False)
    with pytest.raises(ConfigError, match='aggregation=.boq.'):
        _hub('SelaVPRplusplus', aggregation='boq')


def test_supervlad_and_ham_entries(caplog):
    with torch.device('meta'), caplog.at_level(logging.WARNING):
        supervlad = _hub('SuperVLAD', supervlad_clusters=1, ghost_clusters=2,
                         crossimage_encoder=False, infer_batch_size=8)
        ham = _hub('HAMVPR')
    assert supervlad.out_dim == 768 and not supervlad.batch_dependent
    assert 'infer_batch_size' in caplog.text
    assert ham.out_dim == 1024 and ham.config.preprocess.test_size == (224, 224)


def test_dinov2_entries_follow_the_official_hub(tmp_path):
    with torch.device('meta'):
        vit = _hub('dinov2_vits14_reg', pretrained=False)
    assert type(vit).__name__ == 'DinoVisionTransformer'
    assert vit.num_register_tokens == 4 and vit.embed_dim == 384
    with pytest.raises(WeightsNotFoundError, match='dinov2_vitb14_pretrain.pth'):
        _hub('dinov2_vitb14', cache_dir=str(tmp_path))
