"""Proxy mining (GPM): nearest places by proxy, the proxy bank, mined batches, resume."""
import csv
import dataclasses

import numpy as np
import torch
from safetensors.torch import load_file

from training.config import SamplerConfig
from training.datasets import load_sequence_places
from training.run import train
from training.sampler import nearest_places, PlaceBatchSampler, ProxyBank


def test_nearest_places_rank_by_similarity_and_skip_self_and_unseen():
    proxies = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.6, 0.8], [np.nan, np.nan]], np.float32)
    proxies /= np.linalg.norm(np.nan_to_num(proxies), axis=1, keepdims=True) + 1e-12
    proxies[4] = np.nan
    near = nearest_places(proxies, 3)
    assert near.shape == (5, 3)
    assert near[0].tolist() == [1, 3, 2]
    assert near[2].tolist() == [3, 1, 0]
    assert near[4].tolist() == [-1, -1, -1]
    assert 4 not in near[:4]


def test_proxy_bank_averages_each_place_and_marks_unseen(sequence_tree):
    places = load_sequence_places(sequence_tree, ('summer', 'winter'), None, radius=0)
    bank = ProxyBank(places)
    labels = torch.tensor([int(places.labels[3])] * 2 + [int(places.labels[5])])
    bank.add(labels, torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, -1.0]]))
    proxies = bank.proxies()
    assert proxies.shape == (len(places), 2)
    np.testing.assert_allclose(proxies[3], [np.sqrt(0.5)] * 2, rtol=1e-6)
    np.testing.assert_allclose(proxies[5], [0.0, -1.0])
    assert np.isnan(proxies[0]).all() and np.isnan(np.delete(proxies, [3, 5], 0)).all()


def test_mined_batches_gather_places_that_look_alike(sequence_tree):
    places = load_sequence_places(sequence_tree, ('summer', 'winter'), None, radius=0)
    look = np.eye(3, dtype=np.float32)[np.arange(len(places)) % 3]      # 3 groups of 8
    look += 0.01 * np.random.default_rng(0).standard_normal(look.shape).astype(np.float32)
    look /= np.linalg.norm(look, axis=1, keepdims=True)

    def purity(sampler):
        batches = list(sampler)
        drawn = [p for batch in batches for p, _ in batch]
        assert len(drawn) == len(set(drawn))                      # each place at most once
        for batch in batches:
            centres = sorted(int(places.centres[p]) for p, _ in batch)
            assert min(np.diff(centres)) >= places.min_gap
        return np.mean([len({p % 3 for p, _ in batch}) == 1 for batch in batches])

    mined = PlaceBatchSampler(places, 4, shuffle=True, seed=2, proxy_group=4)
    plain = purity(mined)                                         # no proxies yet: plain
    mined.set_proxies(look)
    assert purity(mined) == 1.0 > plain
    assert [b for b in mined] == [b for b in mined]               # deterministic per epoch
    mined.set_proxies(None)
    assert purity(mined) == plain


def test_mining_trains_and_resumes_exactly(sequence_config, tmp_path):
    cfg = sequence_config(epochs=3, sampler=SamplerConfig(places_per_batch=4,
                                                          images_per_place=4, shuffle=True,
                                                          proxy_group=2))
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    train(cfg, straight)
    train(dataclasses.replace(cfg, epochs=2), split)
    proxies = load_file(split / 'train_state.safetensors')['sampler.proxies']
    assert proxies.shape[0] == 16 and not torch.isnan(proxies).all()
    train(cfg, split, resume=True)
    assert _losses(split) == _losses(straight)
    plain = tmp_path / 'plain'
    train(dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, proxy_group=0)),
          plain)
    assert _losses(plain)[:1] == _losses(straight)[:1]           # epoch 1 is never mined
    assert _losses(plain)[1:] != _losses(straight)[1:]


def _losses(run_dir):
    with (run_dir / 'history.csv').open() as handle:
        return [row['loss'] for row in csv.DictReader(handle)]
