"""The public API resolves lazily and completely; importing vpr_core stays cheap."""
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
