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


@pytest.fixture
def restore_threads(monkeypatch):
    import cv2
    import faiss
    before = torch.get_num_threads(), faiss.omp_get_max_threads(), cv2.getNumThreads()
    monkeypatch.setattr(devices, '_THREADS', None)
    yield
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(before[1])
    cv2.setNumThreads(before[2])


@pytest.mark.parametrize('cores, workers, expected', [
    (1, 1, 1), (2, 1, 1), (4, 1, 4), (16, 1, 8), (8, 2, 1), (4, 3, 1)])
def test_default_threads_never_oversubscribe(monkeypatch, cores, workers, expected):
    monkeypatch.setattr(devices, 'available_cores', lambda: cores)
    assert devices.default_threads(workers) == expected


def test_thread_policy_sets_every_library(restore_threads, monkeypatch):
    import cv2
    import faiss
    assert devices.apply_thread_policy(3) == 3
    assert torch.get_num_threads() == 3
    assert faiss.omp_get_max_threads() == 3
    assert cv2.getNumThreads() == 3
    assert devices.thread_count() == 3
    monkeypatch.setattr(devices, 'available_cores', lambda: 2)
    assert devices.apply_thread_policy(None) == 1            # the 2-core default
    assert torch.get_num_threads() == 1 and devices.thread_count() == 1
    with pytest.raises(ConfigError, match='threads must be >= 1'):
        devices.apply_thread_policy(0)
