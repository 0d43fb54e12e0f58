"""Our .safetensors checkpoint: round trip, fingerprint, and errors that name the problem."""
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from io_tiny_models import tiny_model
from vpr_core.errors import CheckpointError, WeightsNotFoundError
from vpr_core.model import checkpoint
from vpr_core.model.checkpoint import load_model, model_fingerprint, read_metadata, save_model


def _descriptors(model, seed=1):
    x = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.descriptors(x)


def _equal(a, b):
    return (a is None and b is None) or torch.equal(a, b)


def test_round_trip_gives_identical_descriptors_and_fingerprint(branch_model, tmp_path):
    path = tmp_path / 'model.safetensors'
    fingerprint = save_model(branch_model, path, metadata={'epochs': 3, 'data': 'nordland'})
    assert fingerprint == model_fingerprint(branch_model)
    loaded = load_model(path)
    assert loaded.fingerprint == fingerprint
    assert not loaded.training
    assert loaded.config == branch_model.config
    for got, want in zip(_descriptors(loaded), _descriptors(branch_model)):
        assert _equal(got, want)
    meta = read_metadata(path)
    assert (meta.descriptor_dim, meta.code_bits, meta.outputs) == (
        branch_model.out_dim, branch_model.code_bits, branch_model.outputs)
    assert meta.extra == {'epochs': 3, 'data': 'nordland'}
    assert meta.fingerprint == fingerprint and meta.schema_version == 1


def test_fingerprint_sees_every_weight_and_the_config():
    model = tiny_model('float')
    base = model_fingerprint(model)
    assert model_fingerprint(tiny_model('float')) == base          # deterministic
    key = sorted(model.state_dict())[-1]
    with torch.no_grad():
        model.state_dict()[key].view(-1)[0] += 1e-6
    assert model_fingerprint(model) != base
    renamed = model.config.with_changes(name='other')
    assert model_fingerprint(model, renamed) != model_fingerprint(model)


def test_metadata_holds_the_whole_architecture(tmp_path):
    model = tiny_model('two_branch')
    save_model(model, tmp_path / 'm.safetensors')
    with safe_open(tmp_path / 'm.safetensors', framework='pt') as handle:
        header = handle.metadata()
    assert header['format'] == 'vpr_ros.model'
    assert json.loads(header['model_config'])['backbone']['embed_dim'] == 32
    assert json.loads(header['preprocess'])['test_size'] == [28, 28]
    assert header['descriptor_dim'] == '24' and header['code_bits'] == '64'


def test_a_file_written_before_a_config_field_existed_still_loads(tmp_path):
    """A config field added later (with its default) must not make old files 'corrupt'."""
    model = tiny_model('float')
    config = json.loads(checkpoint.to_json(model.config))
    del config['backbone']['stem']                 # as written before the conv stem existed
    old_json = json.dumps(config)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    header = {'format': 'vpr_ros.model', 'schema_version': str(checkpoint.SCHEMA_VERSION),
              'model_config': old_json, 'descriptor_dim': str(model.out_dim),
              'code_bits': '0', 'outputs': 'float',
              'fingerprint': checkpoint._fingerprint(old_json, tensors), 'extra': '{}'}
    save_file(tensors, tmp_path / 'old.safetensors', metadata=header)
    loaded = load_model(tmp_path / 'old.safetensors')
    assert loaded.config.backbone.stem == 'patch'
    assert loaded.fingerprint == header['fingerprint']
    assert all(_equal(a, b) for a, b in zip(_descriptors(model), _descriptors(loaded)))


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(WeightsNotFoundError, match='nothing.safetensors'):
        load_model(tmp_path / 'nothing.safetensors')


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / 'cut.safetensors'
    save_model(tiny_model('float'), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match='cut.safetensors'):
        load_model(path)


def test_flipped_byte_is_caught_by_the_fingerprint(tmp_path):
    path = tmp_path / 'flip.safetensors'
    save_model(tiny_model('float'), path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='flip.safetensors is corrupt'):
        load_model(path)


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / 'plain.safetensors'
    save_file({'w': torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match='not a vpr_ros model'):
        load_model(plain)
    junk = tmp_path / 'junk.safetensors'
    junk.write_bytes(b'\x80\x04 this is a pickle, not safetensors')
    with pytest.raises(CheckpointError, match='junk.safetensors'):
        read_metadata(junk)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    path = tmp_path / 'keys.safetensors'
    model = tiny_model('float')
    save_model(model, path)
    with safe_open(path, framework='pt') as handle:
        header = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    dropped = 'linear2.weight'
    del tensors[dropped]
    tensors['stray.bias'] = torch.zeros(3)
    save_file(tensors, path, metadata=header)
    with pytest.raises(CheckpointError, match=f'missing keys: {dropped}.*unexpected keys: '
                                              'stray.bias'):
        load_model(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / 'keep.safetensors'
    fingerprint = save_model(tiny_model('float'), path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(checkpoint, 'save_file', broken)
    with pytest.raises(OSError, match='disk full'):
        save_model(tiny_model('float', seed=5), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['keep.safetensors']
    assert load_model(path).fingerprint == fingerprint


def test_saved_checkpoint_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / 'shared.safetensors'
        save_model(tiny_model('float'), path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644     # safetensors alone would leave 0600


def test_default_model_absent_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, 'DEFAULT_MODEL', tmp_path / 'assets' / 'default.safetensors')
    with pytest.raises(WeightsNotFoundError, match='place one there'):
        checkpoint.default_model_path()
    monkeypatch.setattr(checkpoint, 'DEFAULT_MODEL', tmp_path / 'm.safetensors')
    save_model(tiny_model('float'), tmp_path / 'm.safetensors')
    assert checkpoint.default_model_path() == tmp_path / 'm.safetensors'
