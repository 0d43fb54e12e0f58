"""The public API resolves lazily and completely; importing vpr_core stays cheap."""
import importlib
import subprocess
import sys

import pytest

import vpr_core


@pytest.mark.parametrize('name', vpr_core.__all__)
def test_every_export_resolves(name):
    assert getattr(vpr_core, name) is not None


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match='no_such_thing'):
        vpr_core.no_such_thing


def test_import_does_not_load_torch_or_faiss():
    code = 'import sys, vpr_core; print("torch" in sys.modules, "faiss" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ['False', 'False']


PACKAGES = ('vpr_core.evaluation', 'vpr_core.geometry', 'vpr_core.localization',
            'vpr_core.loops', 'vpr_core.mapdb', 'vpr_core.model')


@pytest.mark.parametrize('package', PACKAGES)
def test_every_package_export_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, f'{package}.{name}'
    with pytest.raises(AttributeError, match='no_such_thing'):
        module.no_such_thing
