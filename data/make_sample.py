"""Make the demo's sample bags from the shared Nordland 64x32 set.

Writes ``data/sample/nordland_summer`` (MCAP) and ``data/sample/nordland_winter`` (sqlite3):
frames ``--first`` .. ``--first + --count - 1`` of the TEST part of the project split
(index 1800 and above), so the bundled model never trained on them.

Each bag holds ``/camera/image`` (sensor_msgs/Image, rgb8, 64x32) and ``/odom``
(nav_msgs/Odometry). Nordland comes without positions, so the poses are synthetic: 1 m along x
per thumbnail. Summer poses are in the map frame (x = index); winter odometry starts at 0 in
its own odom frame (x = index - first), as a robot's odometry would. Stamps keep the real
spacing of the thumbnails (10 s: every 10th frame of 1 fps footage).

Usage (from the repository root): python data/make_sample.py [--source DIR]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
import shutil

from vpr_core.bags import BagWriter
from vpr_core.image import load_image_file
from vpr_core.mapdb.pose import Pose

ROOT = Path(__file__).resolve().parents[1]
TEST_PART_START = 1800
SPACING_S = 10
SEASONS = {
    # season: (bag directory, storage, first stamp in seconds, pose frame, x of the first frame)
    'summer': ('nordland_summer', 'mcap', 1_600_000_000, 'map', None),
    'winter': ('nordland_winter', 'sqlite3', 1_700_000_000, 'odom', 0.0),
}


def read_pairs(source: Path, first: int, count: int) -> list[dict]:
    """The rows of pairs.csv with index first .. first + count - 1 (blank frames refused)."""
    with open(source / 'pairs.csv', newline='') as handle:
        rows = [row for row in csv.DictReader(handle)
                if first <= int(row['index']) < first + count]
    if len(rows) != count or any(row['is_blank'] == '1' for row in rows):
        raise SystemExit(f'pairs.csv has no {count} non-blank frames from index {first}')
    return rows


def write_season(source: Path, out: Path, season: str, rows: list[dict]) -> Path:
    """One bag: an image and an odometry message per row."""
    name, storage, start_s, frame_id, x0 = SEASONS[season]
    path = out / name
    if path.exists():
        shutil.rmtree(path)
    first = int(rows[0]['index'])
    with BagWriter(path, storage) as writer:
        for row in rows:
            index = int(row['index'])
            stamp_ns = (start_s + (index - first) * SPACING_S) * 1_000_000_000
            image = load_image_file(source / row[f'{season}_file'])
            writer.add_image('/camera/image', stamp_ns, image)
            x = float(index) if x0 is None else x0 + (index - first)
            writer.add_pose('/odom', stamp_ns, Pose((x, 0.0, 0.0)), frame_id=frame_id)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--source', type=Path, default=ROOT.parent / 'shared' / 'data' /
                        'nordland_64x32', help='the nordland_64x32 folder')
    parser.add_argument('--out', type=Path, default=ROOT / 'data' / 'sample')
    parser.add_argument('--first', type=int, default=TEST_PART_START)
    parser.add_argument('--count', type=int, default=300)
    args = parser.parse_args()
    if args.first < TEST_PART_START:
        raise SystemExit(f'--first must be >= {TEST_PART_START}: earlier frames are the '
                         'training part')
    rows = read_pairs(args.source, args.first, args.count)
    args.out.mkdir(parents=True, exist_ok=True)
    for season in SEASONS:
        path = write_season(args.source, args.out, season, rows)
        size = sum(f.stat().st_size for f in path.rglob('*') if f.is_file())
        print(f'{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: '
              f'{len(rows)} frames, {size / 1e6:.2f} MB')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
