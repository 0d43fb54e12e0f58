"""The dependency direction of the package, checked from every file's imports."""
import ast
from pathlib import Path
import subprocess
import sys

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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The ``known`` modules a file imports anywhere (module level, functions, methods)."""
    package = module_name(path) if path.name == '__init__.py' else module_name(path.parent)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ''
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                module = '.'.join(base + ([module] if module else []))
            names = [module] + [f'{module}.{alias.name}' for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition('.')[0]
            found.add(name)
    return found - {'', module_name(path)}


def import_graph(package: str) -> dict[str, set[str]]:
    files = {module_name(path): path for path in (ROOT / package).rglob('*.py')}
    return {name: imported_modules(path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}     # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_vpr_core_has_no_import_cycle():
    """Function-level imports count too: they hide a cycle, they do not remove it."""
    graph = import_graph('vpr_core')
    assert len(graph) > 50 and 'vpr_core.model.checkpoint' in graph['vpr_core.model.factory']
    assert find_cycle(graph) is None, f'import cycle: {" -> ".join(find_cycle(graph))}'


def test_cycle_finder_sees_a_function_level_cycle(tmp_path, monkeypatch):
    package = tmp_path / 'pkg'
    package.mkdir()
    (package / '__init__.py').write_text('')
    (package / 'a.py').write_text('from pkg.b import thing\n')
    (package / 'b.py').write_text('def thing():\n    from . import a\n')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
    assert find_cycle(import_graph('pkg')) == ['pkg.a', 'pkg.b', 'pkg.a']


def test_localization_config_imports_no_heavy_package():
    """A dataclass module stays cheap: no OpenCV, rosbags, tqdm, torch or faiss behind it."""
    code = ('import sys\nimport vpr_core.localization.config\n'
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    assert 'vpr_core' in loaded
    assert not {'cv2', 'rosbags', 'tqdm', 'torch', 'faiss'} & set(loaded)


PUBLIC_DEPTH = 2     # vpr_core, vpr_core.<module> or vpr_core.<subpackage>: never deeper


def internal_imports(path: Path) -> set[str]:
    """The vpr_core modules below the public API that a file imports anywhere."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name for name in names if name.split('.')[0] == 'vpr_core'
                     and name.count('.') >= PUBLIC_DEPTH)
    return found


@pytest.mark.parametrize('package', ['vpr_ros', 'training'])
def test_adapters_use_only_the_public_api_of_vpr_core(package):
    """The node and the trainer import names from ``vpr_core`` or one of its packages
    (``vpr_core.mapdb``, whose ``__init__`` lists what is public), never from a module
    inside a package: vpr_core may move its internals without touching them."""
    offenders = {str(path.relative_to(ROOT)): sorted(found)
                 for path in sorted((ROOT / package).rglob('*.py'))
                 if (found := internal_imports(path))}
    assert not offenders, f'imports below the public API: {offenders}'


def test_public_api_checker_sees_internal_imports(tmp_path):
    sample = tmp_path / 'sample.py'
    sample.write_text('from vpr_core.mapdb import MapDatabase\nimport vpr_core.errors\n'
                      'def f():\n    from vpr_core.mapdb.database import MapDatabase\n')
    assert internal_imports(sample) == {'vpr_core.mapdb.database'}
