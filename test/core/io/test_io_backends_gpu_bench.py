"""``bench/gpu.py`` without a GPU: the FLOPs counter against the ViT's closed form, the peak
table, the pending path (no figures, exit 0), and its tables' code run on the CPU with the
device swapped (this checks that the code runs and what it reports, not the GPU)."""
import dataclasses
import importlib
from pathlib import Path

import pytest
import torch

from io_tiny_models import tiny_model
from vpr_core.extractor import Extractor
from vpr_core.mapdb import index as index_module
from vpr_core.model.factory import dinov2_config, selavpr_plusplus_config

BENCH = Path(__file__).resolve().parents[3] / 'bench'


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module('gpu'), importlib.import_module('gpu_flops')


def test_flops_of_a_vit_match_the_closed_form(bench):
    """DINOv2 ViT-B/14 at 224: 12 blocks of 24 N D^2 (qkv, proj, MLP) + 4 N^2 D (attention)
    with N = 257 tokens, plus the 14x14 patch embedding of 256 patches."""
    _, flops = bench
    tokens, dim = 257, 768
    closed = 12 * (24 * tokens * dim ** 2 + 4 * tokens ** 2 * dim) + 2 * 3 * 14 * 14 * dim * 256
    assert flops.flops_per_image(dinov2_config(size='base')) == closed
    two_branch = flops.flops_per_image(selavpr_plusplus_config(backbone='dinov2-base'))
    tokens = 1 + (322 // 14) ** 2       # the backbone alone at 322, below the whole model
    backbone = 12 * (24 * tokens * dim ** 2 + 4 * tokens ** 2 * dim)
    assert backbone < two_branch < 1.5 * backbone


@pytest.mark.parametrize('name, sms, label', [
    ('NVIDIA H100 80GB HBM3', 132, 'H100 SXM'), ('NVIDIA H100 PCIe', 114, 'H100 PCIe'),
    ('NVIDIA H100 NVL', 132, 'H100 NVL'), ('NVIDIA H200', 132, 'H200 SXM'),
    ('NVIDIA GH200 480GB', 132, 'GH200'), ('NVIDIA A100-SXM4-80GB', 108, 'A100'),
    ('NVIDIA L4', 58, 'L4'), ('NVIDIA L40S', 142, 'L40S'),
    ('Orin', 16, 'Jetson AGX Orin 64GB'), ('Orin (nvgpu)', 14, 'Jetson AGX Orin 32GB'),
    ('Orin', 8, None), ('NVIDIA GeForce RTX 4090', 128, None)])
def test_peak_table(bench, name, sms, label):
    _, flops = bench
    peak = flops.peak_for(name, sms)
    assert (peak.label if peak else None) == label
    if peak:
        assert peak.of('fp16') > peak.of('fp32') > 1e12


def test_peak_from_the_command_line(bench):
    _, flops = bench
    assert flops.parse_peak('5.3,42.5').of('fp16') == 42.5e12
    with pytest.raises(ValueError, match='FP32,FP16'):
        flops.parse_peak('42.5')


def test_without_cuda_the_run_is_pending(bench, monkeypatch, capsys):
    gpu, _ = bench
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr('sys.argv', ['gpu.py', '--quick'])
    assert gpu.main() == 0
    out = capsys.readouterr().out
    assert 'GPU run pending' in out and 'CLAIM' not in out and 'ms' not in out


@pytest.fixture
def on_cpu(bench, monkeypatch):
    """The bench module with every ``cuda`` it asks for served by the CPU."""
    gpu, _ = bench

    def extractor(model, **kwargs):
        return Extractor(model, **{**kwargs, 'device': 'cpu'})
    place_index, randn = index_module.PlaceIndex, torch.randn

    def cpu_index(floats, codes, bits, config, *args):
        return place_index(floats, codes, bits, dataclasses.replace(config, device='cpu'),
                           *args)

    def cpu_randn(*shape, **kwargs):
        return randn(*shape, **{k: v for k, v in kwargs.items() if k != 'device'})
    monkeypatch.setattr(gpu, 'Extractor', extractor)
    monkeypatch.setattr(gpu, 'PlaceIndex', cpu_index)
    monkeypatch.setattr(torch, 'randn', cpu_randn)
    return gpu


def test_tables_run(on_cpu, capsys, monkeypatch):
    model = tiny_model('two_branch')
    on_cpu.extraction(model, 10 ** 9, None, seconds=0.0)
    assert on_cpu.binary_search(2000, seconds=0.0) == \
        ['faiss GPU binary search not measured: this faiss has no GPU support']
    monkeypatch.setattr(on_cpu, 'faiss_gpu_available', lambda: True)
    assert on_cpu.binary_search(2000, seconds=0.0) == []
    failures = on_cpu.node_at_30hz(model, frames=3, map_size=300)
    assert all(failure.startswith('node at 30 Hz') for failure in failures)
    out = capsys.readouterr().out
    assert 'tiny-two_branch at 28x28' in out and 'of peak' in out
    assert 'same Hamming distances on GPU and CPU for 256 queries: True' in out
    assert '300-place map' in out and 'p95' in out


def test_without_tensorrt_the_comparison_is_a_failed_claim(on_cpu, capsys):
    failures = on_cpu.torch_vs_tensorrt(tiny_model('two_branch'), quick=True, seconds=0.0)
    assert len(failures) == 1 and failures[0].startswith('torch vs TensorRT not compared')
    assert 'pip install tensorrt' in failures[0]
    assert 'TensorRT not available' in capsys.readouterr().out
