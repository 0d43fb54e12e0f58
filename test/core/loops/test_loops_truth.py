"""Ground truth readers (matrix image, CSV of pairs) and the precision / recall of loops."""
import cv2
import numpy as np
import pytest

from vpr_core.errors import ConfigError
from vpr_core.loops.truth import read_truth, score_loops


def test_matrix_image_is_read_either_triangle_and_symmetrised(tmp_path):
    image = np.zeros((6, 6), np.uint8)
    image[4, 1] = 255           # lower triangle, as RTAB-Map's samples_GT.bmp
    image[2, 5] = 255           # upper triangle
    image[3, 3] = 255           # the diagonal never counts
    path = tmp_path / 'gt.bmp'
    cv2.imwrite(str(path), image)
    truth = read_truth(path, 6)
    assert truth[4, 1] and truth[1, 4] and truth[5, 2] and truth[2, 5]
    assert truth.sum() == 4


def test_rtabmap_ground_truth_has_its_documented_rows(rtabmap):
    truth = read_truth(rtabmap / 'samples_GT.bmp', 84)
    earlier = np.tril(truth, -1)
    assert earlier.sum() == 228
    assert np.flatnonzero(earlier.any(axis=1)).tolist() == list(range(40, 84))


def test_csv_pairs_with_header_and_comments(tmp_path):
    path = tmp_path / 'pairs.csv'
    path.write_text('query,match\n# comment\n5,1\n2,4\n\n')
    truth = read_truth(path, 6)
    assert truth[5, 1] and truth[1, 5] and truth[2, 4] and truth.sum() == 4


@pytest.mark.parametrize('text, message', [('0,9\n', 'outside the stream'),
                                           ('1,2\nx,y\n', 'line 2')])
def test_bad_csv_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / 'pairs.csv'
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_truth(path, 6)


def test_wrong_size_missing_file_and_unknown_kind_are_clear_errors(tmp_path):
    path = tmp_path / 'gt.png'
    cv2.imwrite(str(path), np.zeros((5, 5), np.uint8))
    with pytest.raises(ConfigError, match='5 x 5'):
        read_truth(path, 6)
    with pytest.raises(ConfigError, match='not found'):
        read_truth(tmp_path / 'none.bmp', 6)
    (tmp_path / 'gt.json').write_text('{}')
    with pytest.raises(ConfigError, match='unknown kind'):
        read_truth(tmp_path / 'gt.json', 6)


def test_scores_count_frames_with_a_true_loop():
    truth = np.zeros((6, 6), dtype=bool)
    for q, m in ((3, 0), (4, 1), (5, 2), (5, 1)):
        truth[q, m] = truth[m, q] = True
    scores = score_loops([(3, 0), (4, 2), (5, 1), (5, 2)], truth)
    assert scores['accepted'] == 4 and scores['correct'] == 3 and scores['wrong'] == 1
    assert scores['precision'] == 0.75
    assert scores['frames_with_true_loop'] == 3 and scores['frames_found'] == 2
    assert scores['recall'] == pytest.approx(2 / 3)
    assert score_loops([], truth)['precision'] is None
