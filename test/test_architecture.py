"""The dependency direction of the package, checked from every file's imports."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROS_MODULES = {'rclpy', 'sensor_msgs', 'geometry_msgs', 'std_msgs', 'nav_msgs', 'std_srvs',
               'visualization_msgs', 'diagnostic_msgs', 'lifecycle_msgs', 'rosgraph_msgs',
               'builtin_interfaces', 'rcl_interfaces', 'launch', 'launch_ros', 'cv_bridge',
               'tf2_ros', 'ament_index_python'}
FORBIDDEN = {
    'vpr_core': ROS_MODULES | {'training', 'vpr_ros'},
    'training': ROS_MODULES | {'vpr_ros'},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split('.')[0])
        elif isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'import_module':
            if node.args and isinstance(node.args[0], ast.Constant):
                roots.add(str(node.args[0].value).split('.')[0])
    return roots


@pytest.mark.parametrize('package', sorted(FORBIDDEN))
def test_package_imports_only_allowed_layers(package):
    files = sorted((ROOT / package).rglob('*.py'))
    assert files, f'{package} has no Python files'
    offenders = {}
    for path in files:
        bad = imported_roots(path) & FORBIDDEN[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f'forbidden imports: {offenders}'


def test_checker_sees_forbidden_imports(tmp_path):
    sample = tmp_path / 'sample.py'
    sample.write_text('import rclpy.node\nfrom vpr_ros import node\n'
                      "importlib.import_module('training.loop')\n")
    assert {'rclpy', 'vpr_ros', 'training'} <= imported_roots(sample)
