"""Evaluation set layouts: UTM names, 25 m positives, index-aligned sequences, masks."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from vpr_core.bags import BagWriter
from vpr_core.errors import ConfigError
from vpr_core.evaluation.datasets import (BagFrame, list_images, load_bag_poses,
                                          load_city_mask, load_index_aligned,
                                          load_vg_benchmark, parse_utm, positives_within)
from vpr_core.mapdb.pose import Pose


def vg_name(east: float, north: float) -> str:
    return f'@{east}@{north}@17@T@37.77@-122.41@pano@@@@@@@@.jpg'


def write_image(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))


def test_parse_utm_reads_east_and_north():
    assert parse_utm('/x/' + vg_name(549923.52, 4178811.08)) == (549923.52, 4178811.08)


def test_parse_utm_rejects_other_names():
    with pytest.raises(ConfigError, match='VG-benchmark convention'):
        parse_utm('frame_0001.jpg')


def test_positives_within_is_inclusive():
    database = np.array([[0.0, 0.0], [25.0, 0.0], [25.0001, 0.0], [0.0, -7.0]])
    queries = np.array([[0.0, 0.0], [1000.0, 1000.0]])
    positives = positives_within(database, queries, 25.0)
    assert positives[0].tolist() == [0, 1, 3]
    assert positives[1].tolist() == []


def test_vg_benchmark_layout_keeps_queries_without_positives(tmp_path):
    split = tmp_path / 'images' / 'test'
    for east in (0.0, 30.0, 100.0):
        write_image(split / 'database' / vg_name(east, 0.0))
    write_image(split / 'queries' / vg_name(10.0, 0.0))
    write_image(split / 'queries' / 'sub' / vg_name(500.0, 0.0))
    evalset = load_vg_benchmark(tmp_path, 'test')
    assert len(evalset.database) == 3 and len(evalset.queries) == 2
    # Sorted names: @0.0, @100.0, @30.0 -> the 10 m query sees indices 0 (10 m) and 2 (20 m).
    assert [p.tolist() for p in evalset.positives] == [[0, 2], []]
    assert evalset.has_positive.tolist() == [True, False]


def test_vg_benchmark_missing_split_lists_present_ones(tmp_path):
    (tmp_path / 'images' / 'val').mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"splits present: \['val'\]"):
        load_vg_benchmark(tmp_path, 'test')


def test_index_aligned_tolerance_and_range(tmp_path):
    for i in range(6):
        write_image(tmp_path / 'summer' / f'{i:03d}.png')
        write_image(tmp_path / 'winter' / f'{i:03d}.png')
    evalset = load_index_aligned(tmp_path / 'summer', tmp_path / 'winter', 1)
    assert evalset.sequential
    assert evalset.positives[0].tolist() == [0, 1]
    assert evalset.positives[3].tolist() == [2, 3, 4]
    assert evalset.positives[5].tolist() == [4, 5]
    part = load_index_aligned(tmp_path / 'summer', tmp_path / 'winter', 0, (2, 5))
    assert [p.name for p in part.queries] == ['002.png', '003.png', '004.png']
    assert [p.tolist() for p in part.positives] == [[0], [1], [2]]
    with pytest.raises(ConfigError, match='index range'):
        load_index_aligned(tmp_path / 'summer', tmp_path / 'winter', 0, (4, 9))


def test_list_images_sorts_by_relative_path(tmp_path):
    for name in ('b.png', 'a.jpg', 'c/a.png', 'notes.txt'):
        if name.endswith('.txt'):
            (tmp_path / name).write_text('x')
        else:
            write_image(tmp_path / name)
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == \
        ['a.jpg', 'b.png', 'c/a.png']


def test_city_mask_layout_pairs_every_image_with_its_mask(tmp_path):
    split = tmp_path / 'images' / 'test'
    for kind, east in (('database', 0.0), ('queries', 5.0)):
        write_image(split / kind / vg_name(east, 0.0))
        write_image(split / f'{kind}_mask' / vg_name(east, 0.0).replace('.jpg', '.png'), 255)
    evalset = load_city_mask(tmp_path, 'test')
    assert evalset.database_masks[0].parent.name == 'database_mask'
    assert evalset.query_masks[0].suffix == '.png'
    (evalset.query_masks[0]).unlink()
    with pytest.raises(ConfigError, match='no mask for'):
        load_city_mask(tmp_path, 'test')


def test_index_aligned_with_a_wider_database(tmp_path):
    for i in range(10):
        write_image(tmp_path / 'summer' / f'{i:03d}.png')
        write_image(tmp_path / 'winter' / f'{i:03d}.png')
    evalset = load_index_aligned(tmp_path / 'summer', tmp_path / 'winter', 1, (6, 9), (2, 10))
    assert [p.name for p in evalset.queries] == ['006.png', '007.png', '008.png']
    assert len(evalset.database) == 8
    # Query 6 matches database frames 5..7, which sit at positions 3..5 of the slice 2..9.
    assert [p.tolist() for p in evalset.positives] == [[3, 4, 5], [4, 5, 6], [5, 6, 7]]


def test_bag_query_set_takes_positives_from_the_pose_topic(tmp_path):
    paths = {}
    for name, offset, storage in (('db', 0.0, 'mcap'), ('q', 3.0, 'sqlite3')):
        paths[name] = tmp_path / name
        with BagWriter(paths[name], storage=storage) as writer:
            for i in range(5):
                stamp = (i + 1) * 10 ** 9
                writer.add_image('/cam', stamp, np.full((8, 8, 3), 40 * i, np.uint8))
                writer.add_pose('/odom', stamp, Pose((10.0 * i + offset, 0.0, 0.0)))
    evalset = load_bag_poses(paths['db'], paths['q'], '/odom', radius_m=5.0)
    assert [p.tolist() for p in evalset.positives] == [[0], [1], [2], [3], [4]]
    assert all(isinstance(f, BagFrame) for f in evalset.queries)
    wide = load_bag_poses(paths['db'], paths['q'], '/odom', radius_m=8.0)
    assert wide.positives[1].tolist() == [1, 2]          # 13 m -> 10 m (3 m) and 20 m (7 m)
