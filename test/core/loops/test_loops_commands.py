"""``vpr loops`` end to end: rtabmap_loop acceptance figures, output contract, bad input."""
import csv
import json
import shutil

import numpy as np
import pytest

from vpr_core.cli import main
from vpr_core.image import load_image_file
from vpr_core.loops.commands import natural_key
from vpr_core.loops.report import CSV_HEADER


def _run(*argv) -> int:
    return main(['loops', '--no-progress', '--device', 'cpu', *map(str, argv)])


def _rows(out):
    with open(out / 'loops.csv', newline='') as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope='module')
def rtabmap_runs(rtabmap, tmp_path_factory):
    """Three runs over the 84 frames with the bundled model (about 5 s each on one core):
    verified, --no-verify with the default gates, --no-verify with loose gates."""
    out = tmp_path_factory.mktemp('rtabmap')
    for name, extra in (('verified', []), ('unverified', ['--no-verify']),
                        ('unverified_loose', ['--no-verify', '--set', 'unverified_min_score=0',
                                              '--set', 'unverified_consistency=2'])):
        assert _run('--images', rtabmap / 'samples', '--gt', rtabmap / 'samples_GT.bmp',
                    '--out', out / name, *extra) == 0
    return out


def test_rtabmap_loop_recall_with_verification(rtabmap_runs):
    report = json.loads((rtabmap_runs / 'verified' / 'report.json').read_text())
    truth = report['truth']
    assert truth['frames'] == 84 and truth['frames_with_true_loop'] == 44
    assert truth['recall'] >= 0.60
    assert report['loops_verified'] == report['loops'] and report['verification']
    assert report['keyframes'] == 84 and report['frames_undecodable'] == 0


def test_rtabmap_loop_precision_with_verification(rtabmap_runs):
    truth = json.loads((rtabmap_runs / 'verified' / 'report.json').read_text())['truth']
    assert truth['accepted'] > 0 and truth['precision'] == 1.0


def test_rtabmap_loop_without_verification_is_reported(rtabmap_runs):
    """The default unverified gates accept no loop on these frames (stated explicitly); gates
    that do accept some write only unverified rows without a pose."""
    report = json.loads((rtabmap_runs / 'unverified' / 'report.json').read_text())
    assert report['verification'] is False and report['loops_verified'] == 0
    assert report['loops'] == 0 and report['truth']['accepted'] == 0
    assert _rows(rtabmap_runs / 'unverified') == []
    loose = json.loads((rtabmap_runs / 'unverified_loose' / 'report.json').read_text())
    rows = _rows(rtabmap_runs / 'unverified_loose')
    assert loose['verification'] is False and loose['loops_verified'] == 0
    assert len(rows) > 0 and len(rows) == loose['loops'] == loose['loops_unverified'] == \
        loose['truth']['accepted']
    pose_columns = ('inliers', 'tx', 'ty', 'tz', 'qx', 'qy', 'qz', 'qw', 'metric')
    assert all(r['verified'] == '0' for r in rows)
    assert all(r[k] in ('', '0') for r in rows for k in pose_columns)
    assert all(r[k] == '' for r in rows for k in ('tx', 'ty', 'tz', 'qx', 'qy', 'qz', 'qw'))


def test_loops_csv_contract(rtabmap_runs):
    text = (rtabmap_runs / 'verified' / 'loops.csv').read_text()
    assert text.splitlines()[0].startswith('query,match,score,inliers,')
    assert tuple(text.splitlines()[0].split(',')) == CSV_HEADER
    rows = _rows(rtabmap_runs / 'verified')
    assert rows
    for row in rows:
        query, match = int(row['query']), int(row['match'])
        assert 0 <= match < query < 84
        assert int(row['inliers']) > 0 and row['verified'] == '1'
        quaternion = np.array([float(row[k]) for k in ('qx', 'qy', 'qz', 'qw')])
        assert np.linalg.norm(quaternion) == pytest.approx(1.0, abs=1e-5)
        direction = np.array([float(row[k]) for k in ('tx', 'ty', 'tz')])
        assert row['metric'] == '0'          # no depth: a direction, or zero (rotation only)
        assert np.linalg.norm(direction) == pytest.approx(1.0, abs=1e-3) or \
            np.linalg.norm(direction) == 0.0
    assert (rtabmap_runs / 'verified' / 'loops.png').stat().st_size > 0


def test_folder_order_is_natural():
    names = ['10.jpg', '2.jpg', '1.jpg', 'a/3.jpg', '100.jpg']
    assert sorted(names, key=natural_key) == ['1.jpg', '2.jpg', '10.jpg', '100.jpg', 'a/3.jpg']
    assert sorted(['f010.png', 'f002.png'], key=natural_key) == ['f002.png', 'f010.png']


def test_stream_follows_numeric_file_order(rtabmap, tmp_path):
    """Frames 1, 2 and 10 of the sample named so that text order would put 10 second: the
    saved session's keyframe names come out in numeric order."""
    folder = tmp_path / 'frames'
    folder.mkdir()
    for n in (1, 2, 10):
        shutil.copy(rtabmap / 'samples' / f'{n}.jpg', folder / f'{n}.jpg')
    assert _run('--images', folder, '--out', tmp_path / 'out', '--save-map',
                tmp_path / 'map') == 0
    from vpr_core.mapdb.database import MapDatabase
    stored = MapDatabase.load(tmp_path / 'map')
    first = load_image_file(folder / '1.jpg')
    assert stored.size == 3 and first.shape == (384, 512, 3)
    assert stored.stamps_ns.tolist() == [0, 10**9, 2 * 10**9]


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    assert _run('--images', tmp_path / 'empty', '--out', tmp_path / 'out') == 2
    assert 'no images found' in capsys.readouterr().err


def test_corrupt_jpeg_is_skipped_and_counted_or_aborts_with_strict(rtabmap, tmp_path, capsys):
    folder = tmp_path / 'frames'
    folder.mkdir()
    for n in range(1, 5):
        shutil.copy(rtabmap / 'samples' / f'{n}.jpg', folder / f'{n}.jpg')
    (folder / '3.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    assert _run('--images', folder, '--out', tmp_path / 'out') == 0
    report = json.loads((tmp_path / 'out' / 'report.json').read_text())
    assert report['frames_decoded'] == 3 and report['frames_undecodable'] == 1
    assert report['undecodable'][0]['name'] == '3.jpg'
    assert _run('--images', folder, '--out', tmp_path / 'strict', '--strict') == 2
    assert '3.jpg' in capsys.readouterr().err


def test_bad_override_names_the_closest_key(rtabmap, tmp_path, capsys):
    assert _run('--images', rtabmap / 'samples', '--out', tmp_path / 'out',
                '--set', 'min_scor=0.3') == 2
    assert "did you mean 'min_score'" in capsys.readouterr().err


def test_second_session_from_the_command_line(rtabmap, tmp_path):
    """--save-map then --previous: the second pass's loops to the first are written as
    -1 - row of the previous map."""
    first, second = tmp_path / 'first', tmp_path / 'second'
    for folder, numbers in ((first, range(1, 41)), (second, range(41, 81))):
        folder.mkdir()
        for n in numbers:
            shutil.copy(rtabmap / 'samples' / f'{n}.jpg', folder / f'{n}.jpg')
    assert _run('--images', first, '--out', tmp_path / 'out1', '--save-map',
                tmp_path / 'map1') == 0
    assert _run('--images', second, '--out', tmp_path / 'out2', '--previous',
                tmp_path / 'map1') == 0
    rows = _rows(tmp_path / 'out2')
    previous = [r for r in rows if int(r['match']) < 0]
    assert len(previous) >= 20 and all(r['verified'] == '1' for r in previous)
    # second-pass frame k (stream index k - 41 here) shows first-pass frames k-42..k-38
    close = [abs((int(r['query']) + 41 - 40) - (-1 - int(r['match']) + 1)) <= 2
             for r in previous]
    assert sum(close) >= 0.9 * len(previous)
