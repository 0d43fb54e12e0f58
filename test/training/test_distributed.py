"""torchrun / DistributedDataParallel: two CPU ranks (gloo) follow one process's loss curve.

The model is the tiny SelaVPR++ model with MulConv adapters, whose BatchNorms train, so the
global-batch BatchNorm is exercised too; three epochs of two Adam steps (lr 1e-3), the last one
after a resume under torchrun. Tolerance: per-epoch losses within 1e-5 relative (measured:
7e-8) and final weights within 1e-3 absolute (measured: 3.2e-4; float rounding, as the ranks
sum the gradients in another order and the global-batch BatchNorm takes its variance from
sums, and Adam turns rounding-size differences of near-zero gradients into steps of up to
the learning rate).
"""
import csv
import dataclasses
import os
from pathlib import Path
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import yaml

from training.distributed import GlobalBatchNorm, RankShare, use_global_batch_norms
from training.run import train
from vpr_core.config import to_dict
from vpr_core.model.checkpoint import load_model

REPO = Path(__file__).resolve().parents[2]
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-3


def history(run_dir):
    with (run_dir / 'history.csv').open() as handle:
        return list(csv.DictReader(handle))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def torchrun(config_path: Path, *args: str) -> None:
    """``python -m training`` on two CPU ranks of this host."""
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='', GLOO_SOCKET_IFNAME='lo',
               PYTHONPATH=str(REPO))
    command = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1',
               '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
               '--master_port', str(free_port()), '-m', 'training', *args]
    if config_path is not None:
        command += ['--config', str(config_path)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


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
    train(cfg, single)

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
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=WEIGHT_ATOL), name
    assert not list(ddp.glob('*.tmp*'))
