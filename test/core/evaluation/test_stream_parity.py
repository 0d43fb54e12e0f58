"""One localization path: ``vpr evaluate --sequence-length`` reports what the node publishes.

The bundled sample (300 real Nordland test-part frames per season, ``data/sample``) goes
through ``vpr build-map`` + ``vpr bag-eval`` (the node's pipeline over the bag, frame by frame)
and through ``vpr evaluate`` with the same frames; both must give the same sequence recall and
the same accepted matches. ``bench/stream_parity.py`` does the same over the whole test part.
"""
import json
from pathlib import Path

import pytest

from vpr_core.cli import main

SAMPLE = Path(__file__).resolve().parents[3] / 'data' / 'sample'
TOPIC = '/camera/image'


@pytest.fixture(scope='module')
def sample_map(tmp_path_factory):
    if not (SAMPLE / 'nordland_summer').is_dir():
        pytest.skip('data/sample is missing')
    out = tmp_path_factory.mktemp('parity') / 'map'
    assert main(['build-map', '--bag', str(SAMPLE / 'nordland_summer'), '--image-topic', TOPIC,
                 '--pose-topic', '/odom', '--out', str(out), '--no-progress']) == 0
    return out


@pytest.mark.parametrize('mode', ['rerank', 'float'])
def test_evaluate_and_bag_eval_give_the_same_stream_figures(sample_map, tmp_path, mode):
    bag_out, eval_out = tmp_path / 'bag', tmp_path / 'eval'
    search = {'rerank': 'rerank', 'float': 'float'}[mode]
    assert main(['bag-eval', '--bag', str(SAMPLE / 'nordland_winter'), '--image-topic', TOPIC,
                 '--map', str(sample_map), '--index-tolerance', '1', '--no-progress',
                 '--set', f'localization.search.mode={search}', '--out', str(bag_out)]) == 0
    assert main(['evaluate', '--database', str(SAMPLE / 'nordland_summer'), '--queries',
                 str(SAMPLE / 'nordland_winter'), '--image-topic', TOPIC, '--tolerance', '1',
                 '--sequence-length', '10', '--mode', mode, '--no-baseline', '--no-progress',
                 '--out', str(eval_out)]) == 0
    node = json.loads((bag_out / 'report.json').read_text())
    offline = json.loads((eval_out / 'report.json').read_text())
    assert node['config']['sequence']['length'] == 10        # the node's default window
    for n in ('1', '5', '10'):
        assert abs(node['recall_at'][n] - offline['sequence_recall_at'][n]) <= 0.005, n
    assert abs(node['accepted']['count'] - offline['accepted']['count']) <= 1
    assert abs(node['accepted']['correct'] - offline['accepted']['correct']) <= 1
    # not a vacuous comparison: the stream figures differ from the single-frame ones
    assert offline['sequence_recall_at']['1'] > offline['recall_at']['1'] + 0.05
    assert offline['accepted']['count'] > 50
