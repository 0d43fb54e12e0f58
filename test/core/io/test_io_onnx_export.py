"""ONNX export parity against onnxruntime on CPU (tiny models, dynamic batch)."""
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from io_tiny_models import tiny_model
from vpr_core import cli
from vpr_core.model.checkpoint import model_fingerprint, save_model
from vpr_core.model.export import export_onnx


def _session(path):
    return onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])


def _check_parity(model, path):
    kind = model.outputs
    session = _session(path)
    names = [output.name for output in session.get_outputs()]
    assert names == {'float': ['descriptor'], 'hash': ['code'],
                     'two_branch': ['descriptor', 'code']}[kind]
    for batch in (1, 5):      # the batch axis is dynamic (exported with 2)
        x = torch.randn(batch, 3, 28, 28, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            floats, signs = model.descriptors(x)
        got = dict(zip(names, session.run(None, {'image': x.numpy()})))
        if floats is not None:
            assert got['descriptor'].shape == (batch, 24)
            assert np.abs(got['descriptor'] - floats.numpy()).max() < 1e-4
        if signs is not None:
            assert set(np.unique(got['code'])) <= {-1.0, 1.0}
            # A code bit may only flip where |z| is at float-noise level.
            with torch.no_grad():
                z = model(x)[0]
            flipped = got['code'] != signs.numpy()
            assert np.all(np.abs(z.numpy()[flipped]) < 1e-5)


@pytest.mark.parametrize('kind', ['float', 'two_branch'])
def test_onnxruntime_matches_torch(kind, tmp_path):
    model = tiny_model(kind)
    path = export_onnx(model, tmp_path / 'deploy' / f'{kind}.onnx')
    _check_parity(model, path)
    assert [p.name for p in path.parent.iterdir()] == [f'{kind}.onnx']   # no temp left
    meta = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    assert meta['vpr_ros.fingerprint'] == model_fingerprint(model)
    assert json.loads(meta['vpr_ros.preprocess'])['test_size'] == [28, 28]
    assert meta['vpr_ros.descriptor_dim'] == str(model.out_dim)
    assert meta['vpr_ros.code_bits'] == str(model.code_bits)


def test_cli_exports_a_hashing_checkpoint(tmp_path):
    model = tiny_model('hash')
    fingerprint = save_model(model, tmp_path / 'm.safetensors')
    assert cli.main(['export-onnx', str(tmp_path / 'm.safetensors'),
                     str(tmp_path / 'm.onnx')]) == 0
    _check_parity(model, tmp_path / 'm.onnx')
    meta = {e.key: e.value for e in onnx.load(str(tmp_path / 'm.onnx')).metadata_props}
    assert meta['vpr_ros.fingerprint'] == fingerprint
