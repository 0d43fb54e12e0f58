"""Extractor: images -> Descriptors, batching that never changes a descriptor."""
import numpy as np
import pytest
import torch

from io_tiny_models import tiny_model
from vpr_core.descriptors import pack_codes
from vpr_core.errors import ConfigError, WeightsNotFoundError
from vpr_core.extractor import describe, Extractor
from vpr_core.model import checkpoint
from vpr_core.model.checkpoint import model_fingerprint, save_model
from vpr_core.preprocess import preprocess_batch


def _reference(model, images):
    """Straight through the model, one forward pass for all images."""
    batch = preprocess_batch(images, model.config.preprocess)
    with torch.no_grad():
        floats, signs = model.descriptors(batch)
    return (None if floats is None else floats.numpy(),
            None if signs is None else pack_codes(signs.numpy()))


def test_descriptors_follow_the_contract(branch_model, images):
    out = Extractor(branch_model, device='cpu', batch_size=2).extract(images)
    floats, codes = _reference(branch_model, images)
    assert len(out) == len(images)
    if floats is None:
        assert out.floats is None
    else:
        assert out.floats.dtype == np.float32 and out.floats.shape == (5, 24)
        np.testing.assert_allclose(np.linalg.norm(out.floats, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(out.floats, floats, atol=1e-6)
    if codes is None:
        assert out.codes is None
    else:
        assert out.codes.dtype == np.uint8 and out.codes.shape == (5, 8)
        np.testing.assert_array_equal(out.codes, codes)


def test_batch_size_never_changes_a_descriptor(images):
    model = tiny_model('two_branch')
    runs = [Extractor(model, device='cpu', batch_size=size).extract(images)
            for size in (1, 3, 16)]
    for run in runs[1:]:
        np.testing.assert_allclose(run.floats, runs[0].floats, atol=1e-6)
        np.testing.assert_array_equal(run.codes, runs[0].codes)


def test_crossimage_single_policy_ignores_batch_composition(images):
    model = tiny_model('crossimage')
    assert model.batch_dependent
    extractor = Extractor(model, device='cpu', batch_size=8)
    alone = extractor.extract(images[:1]).floats[0]
    among_all = extractor.extract(images).floats[0]
    shuffled = extractor.extract([images[3], images[0], images[1]]).floats[1]
    np.testing.assert_array_equal(among_all, alone)
    np.testing.assert_array_equal(shuffled, alone)
    # The dependence is real: one forward over the whole list changes image 0's descriptor.
    assert np.abs(_reference(model, images)[0][0] - alone).max() > 1e-5


def test_crossimage_fixed_batch_policy_is_the_papers_protocol(images):
    model = tiny_model('crossimage')
    out = Extractor(model, device='cpu', crossimage_policy='fixed_batch').extract(images)
    size = model.config.preprocess.infer_batch_size
    assert size == 3
    expected = np.concatenate([_reference(model, images[:3])[0],
                               _reference(model, images[3:])[0]])
    np.testing.assert_allclose(out.floats, expected, atol=1e-6)


def test_properties_and_fingerprint(tmp_path):
    model = tiny_model('two_branch')
    extractor = Extractor(model, device='cpu')
    assert (extractor.descriptor_dim, extractor.code_bits) == (24, 64)
    assert extractor.model_config == model.config
    assert extractor.fingerprint == model_fingerprint(model)
    path = tmp_path / 'm.safetensors'
    fingerprint = save_model(model, path)
    assert Extractor.from_weights(path, device='cpu').fingerprint == fingerprint


def test_describe_and_from_weights_agree(tmp_path, images, monkeypatch):
    model = tiny_model('float')
    path = tmp_path / 'm.safetensors'
    save_model(model, path)
    direct = Extractor(model, device='cpu').extract(images)
    np.testing.assert_array_equal(describe(images, weights=path, device='cpu').floats,
                                  direct.floats)
    np.testing.assert_array_equal(describe(images, model=model, device='cpu').floats,
                                  direct.floats)
    monkeypatch.setattr(checkpoint, 'DEFAULT_MODEL', path)
    np.testing.assert_array_equal(describe(images, device='cpu').floats, direct.floats)
    monkeypatch.setattr(checkpoint, 'DEFAULT_MODEL', tmp_path / 'absent.safetensors')
    with pytest.raises(WeightsNotFoundError, match='absent.safetensors'):
        Extractor.from_weights(None)
    with pytest.raises(ConfigError, match='not both'):
        describe(images, weights=path, model=model)


def test_empty_input_and_bad_settings():
    model = tiny_model('two_branch')
    out = Extractor(model, device='cpu', progress=True).extract([])
    assert out.floats.shape == (0, 24) and out.codes.shape == (0, 8)
    with pytest.raises(ConfigError, match='single, fixed_batch'):
        Extractor(model, crossimage_policy='random')
    with pytest.raises(ConfigError, match='batch_size'):
        Extractor(model, batch_size=0)


def test_extract_tensor_matches_extract(images):
    model = tiny_model('hash')
    extractor = Extractor(model, device='cpu', batch_size=2)
    batch = preprocess_batch(images, model.config.preprocess)
    np.testing.assert_array_equal(extractor.extract_tensor(batch).codes,
                                  extractor.extract(images).codes)
