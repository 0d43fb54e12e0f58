"""Device selection and fp16 policy (CUDA paths simulated; nothing initialises CUDA)."""
import pytest
import torch

from vpr_core import devices
from vpr_core.errors import ConfigError


def test_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert devices.select_device('cpu') == torch.device('cpu')
    assert devices.select_device('auto') == torch.device('cpu')
    assert devices.select_device(torch.device('cpu')) == torch.device('cpu')
    with pytest.raises(ConfigError, match='no CUDA'):
        devices.select_device('cuda')


def test_auto_and_index_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert devices.select_device('auto') == torch.device('cuda')
    assert devices.select_device('CUDA:1') == torch.device('cuda', 1)
    with pytest.raises(ConfigError, match='0..1'):
        devices.select_device('cuda:2')


def test_unknown_device_lists_valid_ones():
    with pytest.raises(ConfigError, match='auto, cpu, cuda, cuda:N'):
        devices.select_device('tpu')


def test_fp16_policy():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert devices.use_fp16(cpu) is False
    assert devices.use_fp16(cpu, True) is False
    assert devices.use_fp16(cuda) is True
    assert devices.use_fp16(cuda, False) is False
    with devices.autocast(cpu, True):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


def test_faiss_gpu_probe_is_false_on_a_cpu_build():
    if torch.cuda.is_available():
        pytest.skip('machine has CUDA')
    assert devices.faiss_gpu_available() is False


def test_release_memory_empties_the_cuda_cache_only_for_cuda(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: emptied.append(True))
    devices.release_memory('cpu')
    assert emptied == []
    devices.release_memory(torch.device('cuda', 0))
    assert emptied == [True]
