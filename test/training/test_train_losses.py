"""Multi-similarity miner and loss, and the SelaVPR++ hashing loss, on hand-computed cases."""
import math

import pytest
import torch

from training.losses import (HashingLoss, mine_multi_similarity, MultiSimilarity,
                             multi_similarity_loss, similarity_constraint)


def unit(*angles_deg):
    """Unit vectors in the plane at the given angles: cosines are easy to compute by hand."""
    radians = torch.tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    return torch.stack([torch.cos(radians), torch.sin(radians)], dim=1)


def pairs_of(mined):
    return (sorted(zip(mined.a1.tolist(), mined.p.tolist())),
            sorted(zip(mined.a2.tolist(), mined.n.tolist())))


def test_miner_keeps_hard_pairs_only():
    # Place 0: images 0 (0 deg), 1 (50 deg); place 1: images 2 (60 deg), 3 (180 deg).
    x = unit(0, 50, 60, 180)
    labels = torch.tensor([0, 0, 1, 1])
    positives, negatives = pairs_of(mine_multi_similarity(x, labels, epsilon=0.1))
    # cos(50)=.643, cos(60)=.5, cos(10)=.985, cos(120)=-.5, cos(130)=-.643, cos(180)=-1.
    # Anchor 0: hardest negative .5; positive .643 - .1 = .543 > .5 -> dropped;
    #   easiest positive .643: negative .5 + .1 = .6 < .643 -> dropped.
    # Anchor 1: hardest neg .985 (img 2): positive .643 - .1 < .985 kept; neg 2 (.985 + .1 >
    #   .643) kept; neg 3 (-.643 + .1) dropped.
    # Anchor 2: hardest neg .985 (img 1): positive 3 (-.5) kept; negs 1 (.985) and 0 (.5)
    #   exceed -.5 - .1... (.5 + .1 > -.5, .985 + .1 > -.5) -> both kept.
    # Anchor 3: hardest neg -.643 (img 1): positive -.5 - .1 = -.6 < -.643? no -> dropped;
    #   easiest positive -.5: neg 1 (-.643 + .1 = -.543 > -.5? no), neg 0 (-1 + .1) -> none.
    assert positives == [(1, 0), (2, 3)]
    assert negatives == [(1, 2), (2, 0), (2, 1)]


def test_ms_loss_matches_the_formula_on_mined_pairs():
    x = unit(0, 50, 60, 180)
    labels = torch.tensor([0, 0, 1, 1])
    mined = mine_multi_similarity(x, labels, 0.1)
    loss = multi_similarity_loss(x, mined, alpha=1.0, beta=50.0, base=0.0)
    cos = lambda a, b: math.cos(math.radians(a - b))  # noqa: E731
    anchor1 = math.log1p(math.exp(-cos(50, 0))) + math.log1p(math.exp(50 * cos(50, 60))) / 50
    anchor2 = math.log1p(math.exp(-cos(60, 180))) + \
        math.log1p(math.exp(50 * cos(60, 0)) + math.exp(50 * cos(60, 50))) / 50
    assert loss.item() == pytest.approx((anchor1 + anchor2) / 4, rel=1e-6)


def test_ms_loss_uses_cosine_unless_told_otherwise():
    x = unit(0, 50, 60, 180)
    labels = torch.tensor([0, 0, 1, 1])
    mined = mine_multi_similarity(x, labels, 0.1)
    scaled = multi_similarity_loss(3 * x, mined)
    assert scaled.item() == pytest.approx(multi_similarity_loss(x, mined).item())
    assert multi_similarity_loss(3 * x, mined, normalize=False).item() != \
        pytest.approx(scaled.item())


def test_ms_loss_is_zero_when_every_mined_list_has_at_most_one_entry():
    x = unit(0, 10, 90, 100)
    mined = mine_multi_similarity(x, torch.tensor([0, 1, 2, 3]), 0.1)   # no positives at all
    assert len(mined.a1) == 0
    assert multi_similarity_loss(x, mined).item() == 0.0


def test_similarity_constraint_hand_computed():
    b = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0, 1.0, 1.0, -1.0],
                      [1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, 1.0, 1.0]])
    z = torch.eye(4)[[0, 0, 1, 2]]
    mined = mine_multi_similarity(b, torch.tensor([0, 0, 1, 1]), 0.1)
    # Cosines of b: (0,1) .5, (0,2) 0, (0,3) -1, (1,2) .5, (1,3) -.5, (2,3) 0.
    assert pairs_of(mined) == ([(1, 0), (2, 3)], [(1, 2), (2, 0), (2, 1)])
    # <z_i, z_j> - <b_i, b_j> / 4 over those pairs: 1-.5, 0-0, 0-.5, 0-0, 0-.5.
    assert similarity_constraint(z, b, mined).item() == pytest.approx(0.75 / 5)


def test_hashing_loss_adds_a_tenth_of_the_constraint():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    b = torch.where(z >= 0, 1.0, -1.0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    mined = mine_multi_similarity(b, labels, 0.1)
    expected = multi_similarity_loss(b, mined) + 0.1 * similarity_constraint(z, b, mined)
    assert HashingLoss()(z, b, labels).item() == pytest.approx(expected.item())


def test_loss_gives_gradients_that_pull_positives_together():
    torch.manual_seed(0)
    x = torch.randn(8, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = MultiSimilarity()(x, labels)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
