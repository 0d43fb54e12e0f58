"""ament_flake8 over the whole package (99 columns, single quotes, import order)."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ('vpr_core', 'vpr_ros', 'training', 'test', 'bench', 'launch', 'setup.py',
         'hubconf.py')


@pytest.mark.linter
def test_flake8():
    main_with_errors = pytest.importorskip('ament_flake8.main').main_with_errors
    paths = [p for p in PATHS if (ROOT / p).exists()]
    rc, errors = main_with_errors(argv=[str(ROOT / p) for p in paths])
    assert rc == 0, f'{len(errors)} flake8 errors:\n' + '\n'.join(errors)
