"""``vpr loops --bag``: the same frames as a rosbag2 give the same loops as the folder."""
import json

from vpr_core.bags import BagWriter, read_camera_info
from vpr_core.cli import main
from vpr_core.geometry.camera import CameraModel
from vpr_core.image import load_image_file


def test_bag_with_camera_info_gives_the_folder_loops(rtabmap, tmp_path):
    camera = CameraModel.guess(512, 384)        # what the folder run assumes
    bag = tmp_path / 'loop_bag'
    with BagWriter(bag) as writer:
        writer.add_camera_info('/camera/camera_info', 1, camera.matrix.reshape(-1), 512, 384,
                               (0.0, 0.0, 0.0, 0.0, 0.0))
        for n in range(1, 85):
            writer.add_image('/camera/image', n * 10**9, load_image_file(
                rtabmap / 'samples' / f'{n}.jpg'))
    info = read_camera_info(bag, '/camera/camera_info')
    assert (info.width, info.height, info.k[0], info.k[2]) == (512, 384, camera.fx, camera.cx)
    common = ['loops', '--no-progress', '--device', 'cpu', '--gt',
              str(rtabmap / 'samples_GT.bmp')]
    assert main([*common, '--bag', str(bag), '--image-topic', '/camera/image',
                 '--camera-info-topic', '/camera/camera_info', '--out',
                 str(tmp_path / 'bag')]) == 0
    assert main([*common, '--images', str(rtabmap / 'samples'), '--out',
                 str(tmp_path / 'folder')]) == 0
    from_bag = (tmp_path / 'bag' / 'loops.csv').read_text().splitlines()
    from_folder = (tmp_path / 'folder' / 'loops.csv').read_text().splitlines()
    assert len(from_bag) > 1
    pairs = [line.split(',')[:4] for line in from_bag]
    assert pairs == [line.split(',')[:4] for line in from_folder]
    report = json.loads((tmp_path / 'bag' / 'report.json').read_text())
    assert report['keyframes'] == 84
