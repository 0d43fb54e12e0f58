"""The growing keyframe store: prefix exclusion and the two-stage search against numpy."""
import numpy as np
import pytest

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.loops.store import GrowingArray, KeyframeStore


def _rows(rng, count, dim=64):
    floats = rng.standard_normal((count, dim)).astype(np.float32)
    floats /= np.linalg.norm(floats, axis=1, keepdims=True)
    return Descriptors(floats, pack_codes(np.sign(floats)))


def test_growing_array_keeps_rows_across_capacity_doubling():
    array = GrowingArray(3, np.float32, capacity=2)
    values = np.arange(30, dtype=np.float32).reshape(10, 3)
    for row in values:
        array.extend(row[None])
    np.testing.assert_array_equal(array.rows, values)


def test_eligible_prefix_excludes_recent_time_and_travel_but_never_previous_sessions():
    rng = np.random.default_rng(0)
    store = KeyframeStore(64, 64)
    store.add(_rows(rng, 3))                                  # a previous session
    for i in range(10):                                       # 1 s and 2 m apart
        store.add(_rows(rng, 1), elapsed_s=float(i), travel_m=2.0 * i)
    # query at 10 s, 20 m: older than 5 s -> rows of 0..5 s; farther than 9 m -> 0..10 m
    assert store.eligible(10.0, 20.0, 5.0, 9.0) == 3 + 6
    assert store.eligible(10.0, 20.0, 5.0, 15.0) == 3 + 3     # travel is stricter
    assert store.eligible(10.0, None, 5.0, 15.0) == 3 + 6     # no odometry: time only
    assert store.eligible(10.0, 20.0, 100.0, 0.0) == 3        # previous rows always


def test_rows_without_odometry_stay_eligible_by_time():
    rng = np.random.default_rng(1)
    store = KeyframeStore(64, 64)
    store.add(_rows(rng, 1), elapsed_s=0.0, travel_m=0.0)
    store.add(_rows(rng, 1), elapsed_s=1.0, travel_m=None)
    store.add(_rows(rng, 1), elapsed_s=2.0, travel_m=50.0)
    assert store.eligible(10.0, 60.0, 1.0, 20.0) == 2


@pytest.mark.parametrize('rerank_k', [0, 16])
def test_search_matches_brute_force_cosine_within_the_prefix(rerank_k):
    rng = np.random.default_rng(2)
    store = KeyframeStore(64, 64)
    data = _rows(rng, 600)
    for i in range(600):
        store.add(data[i:i + 1], elapsed_s=float(i))
    query = data[100:101]
    rows, scores = store.search(query, 400, 5, rerank_k=600)
    expected = np.argsort(-(data.floats[:400] @ query.floats[0]), kind='stable')[:5]
    np.testing.assert_array_equal(rows, expected)
    assert rows[0] == 100 and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(rows < 400)
    rows, _ = store.search(query, 400, 5, rerank_k=rerank_k)
    assert rows[0] == 100                                      # the two-stage path


def test_codes_only_store_scores_by_hamming():
    rng = np.random.default_rng(3)
    data = _rows(rng, 50)
    store = KeyframeStore(0, 64)
    store.add(Descriptors(None, data.codes), elapsed_s=0.0)
    rows, scores = store.search(Descriptors(None, data.codes[7:8]), 50, 3)
    assert rows[0] == 7 and scores[0] == 1.0
    assert store.search(Descriptors(None, data.codes[7:8]), 0, 3)[0].size == 0
