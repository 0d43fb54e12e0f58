"""torchrun / DistributedDataParallel: two CPU ranks (gloo) follow one process's loss curve.

The model is the tiny SelaVPR++ model with MulConv adapters, whose BatchNorms train, so the
global-batch BatchNorm is exercised too; three epochs of two Adam steps (lr 1e-3), the last one
after a resume under torchrun. The single-process reference runs on one thread, as each rank.
Tolerances (float rounding: the ranks sum gradients in another order and the global-batch
BatchNorm takes its variance from sums): per-epoch losses within 1e-5 relative (measured:
7e-8). Weights are not compared element by element: a conv bias followed by a train-mode
BatchNorm has a zero gradient up to rounding, and Adam turns that noise into steps of up to
the learning rate, so such a bias differs by the order of lr between runs without changing
any output. Instead every tensor the training moved by more than lr differs between the runs
by under 1% of that movement (measured worst: 6.2e-4), and the two models' descriptors of six
images agree within 1e-5 (measured: 6.2e-7) while training moved them by far more.
"""
import csv
import dataclasses
import datetime
import os
from pathlib import Path
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import yaml

from training import distributed, factory
from training.distributed import GlobalBatchNorm, RankShare, use_global_batch_norms
from training.run import seed_everything, train
from vpr_core.errors import ConfigError
from vpr_core.config import to_dict
from vpr_core.extractor import Extractor
from vpr_core.model.checkpoint import load_model

REPO = Path(__file__).resolve().parents[2]
LOSS_RTOL = 1e-5
WEIGHT_RTOL = 1e-2
DESCRIPTOR_ATOL = 1e-5


def history(run_dir):
    with (run_dir / 'history.csv').open() as handle:
        return list(csv.DictReader(handle))


def torchrun(config_path: Path, *args: str) -> None:
    """``python -m training`` on two CPU ranks of this host. ``--standalone``: the rendezvous
    store takes a free port itself (no probe-then-bind race); ranks meet on 127.0.0.1. The
    launcher runs in a session of its own, so a timeout kills it and its ranks."""
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='', GLOO_SOCKET_IFNAME='lo',
               PYTHONPATH=str(REPO))
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nnodes', '1',
               '--nproc_per_node', '2', '--local-addr', '127.0.0.1', '-m', 'training', *args]
    if config_path is not None:
        command += ['--config', str(config_path)]
    launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        out, err = launcher.communicate()
        pytest.fail('torchrun ran past 300 s (killed with its ranks): ' + err[-3000:])
    assert launcher.returncode == 0, out[-3000:] + err[-5000:]


def test_the_process_group_waits_long_enough_for_rank_0_to_validate(monkeypatch):
    joined = {}
    monkeypatch.setattr(dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(dist, 'init_process_group',
                        lambda backend, **kwargs: joined.update(kwargs, backend=backend))
    for name, value in dict(WORLD_SIZE='2', RANK='1', LOCAL_RANK='1', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT='1').items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(distributed.TIMEOUT_VARIABLE, raising=False)
    job = distributed.from_environment('cpu')
    assert (job.rank, job.world_size, joined['backend']) == (1, 2, 'gloo')
    assert joined['timeout'] == datetime.timedelta(minutes=120)
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, '45')
    distributed.from_environment('cpu')
    assert joined['timeout'] == datetime.timedelta(minutes=45)
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, 'soon')
    with pytest.raises(ConfigError, match='VPR_DIST_TIMEOUT_MIN must be a positive number'):
        distributed.from_environment('cpu')


def test_the_whiten_stage_refuses_to_run_under_torchrun(sequence_config, tmp_path,
                                                        monkeypatch):
    for name, value in dict(WORLD_SIZE='2', RANK='0', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT='1').items():
        monkeypatch.setenv(name, value)
    cfg = sequence_config(stage='whiten', device='cpu', out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match='the whiten stage runs in one process'):
        train(cfg, tmp_path / 'whiten')
    assert not (tmp_path / 'whiten').exists()


def test_rank_share_splits_each_batch_into_contiguous_disjoint_parts():
    batches = [[(p, 7 * p) for p in range(b * 5, b * 5 + 5)] for b in range(3)] + [[(99, 1)]]
    shares = [list(RankShare(batches, rank, 2)) for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == 3        # the one-place batch is left out
    for batch, first, second in zip(batches, *shares):
        assert first + second == batch and len(first) == 3 and len(second) == 2


def test_global_batch_norm_equals_batch_norm_in_one_process():
    dist.init_process_group('gloo', store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        synced = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        synced.load_state_dict(plain.state_dict())
        assert use_global_batch_norms(synced) == 1 and isinstance(synced[1], GlobalBatchNorm)
        assert set(synced.state_dict()) == set(plain.state_dict())
        x = torch.randn(6, 3, 9, 9)
        for model in (plain, synced):
            model(x).square().mean().backward()
        assert torch.allclose(plain(x), synced(x), atol=1e-5)
        assert torch.allclose(plain[1].running_var, synced[1].running_var, atol=1e-6)
        assert torch.allclose(plain[0].weight.grad, synced[0].weight.grad, atol=1e-5)
    finally:
        dist.destroy_process_group()


def test_torchrun_two_ranks_follow_the_single_process_loss_curve(sequence_config, tmp_path):
    cfg = sequence_config(epochs=3, steps_per_epoch=2, device='cpu', out_dir=str(tmp_path))
    single = tmp_path / 'single'
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # as the ranks (OMP_NUM_THREADS=1): the same reductions
    try:
        seed_everything(cfg.seed)   # the initial weights, as train() makes them
        initial = factory.build(cfg).state_dict()
        train(cfg, single)
    finally:
        torch.set_num_threads(threads)

    config_path = tmp_path / 'ddp.yaml'
    ddp_cfg = dataclasses.replace(cfg, run_name='ddp', epochs=2)
    config_path.write_text(yaml.safe_dump(to_dict(ddp_cfg), sort_keys=False))
    torchrun(config_path)
    ddp = tmp_path / 'ddp'
    assert [int(r['epoch']) for r in history(ddp)] == [1, 2]
    torchrun(None, '--resume', str(ddp), '--set', 'epochs=3')     # resume under torchrun

    expected, got = history(single), history(ddp)
    assert [int(r['steps']) for r in got] == [int(r['steps']) for r in expected] == [2, 2, 2]
    for mine, theirs in zip(got, expected):
        assert float(mine['loss']) == pytest.approx(float(theirs['loss']), rel=LOSS_RTOL)
        assert float(mine['val_r1']) == pytest.approx(float(theirs['val_r1']), abs=1e-9)
    assert float(expected[0]['loss']) != pytest.approx(float(expected[-1]['loss']),
                                                       rel=1e-3)   # it trained
    a = load_model(single / 'last.safetensors').state_dict()
    b = load_model(ddp / 'last.safetensors').state_dict()
    assert set(a) == set(b)
    frozen = [n for n in a if n.startswith('backbone.patch_embed')]
    assert frozen and all(torch.equal(a[n], initial[n]) for n in frozen)   # the same start
    for name in a:      # tensors the training moved by more than one learning rate
        moved = float((a[name].float() - initial[name].float()).norm())
        apart = float((a[name].float() - b[name].float()).norm())
        if moved > cfg.optim.lr:
            assert apart <= WEIGHT_RTOL * moved, (name, apart, moved)
    images = [np.random.default_rng(k).integers(0, 255, (40, 40, 3), np.uint8) for k in range(6)]
    untrained = factory.build(cfg)
    untrained.load_state_dict(initial)
    start = describe(untrained, images)
    one, two = (describe(load_model(d / 'last.safetensors'), images) for d in (single, ddp))
    assert np.abs(one - two).max() <= DESCRIPTOR_ATOL
    assert np.abs(one - start).max() > 100 * DESCRIPTOR_ATOL     # training changed them
    assert not list(ddp.glob('*.tmp*'))


def describe(model, images) -> np.ndarray:
    return Extractor(model, device='cpu').extract(images).floats
