"""Multi-similarity loss and miner (Wang et al., CVPR 2019) and the SelaVPR++ hashing loss.

Settings of the seeds (GSV-Cities ``utils/losses.py``, pytorch-metric-learning):
``MultiSimilarityLoss(alpha=1, beta=50, base=0, distance=DotProductSimilarity())`` with
``MultiSimilarityMiner(epsilon=0.1, distance=CosineSimilarity())``. Two library behaviours are
reproduced on purpose:

- ``DotProductSimilarity()`` normalises embeddings by default, so the loss similarity is the
  cosine. For L2-normalised float descriptors this changes nothing; for the +-1 hashing codes it
  means similarities in [-1, 1] (dot / bits), not [-bits, bits]. ``normalize=False`` gives the
  raw dot product instead.
- When every mined index list holds at most one entry the loss is zero.

The loss is averaged over all anchors of the batch; an anchor without mined pairs adds 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MinedPairs:
    """Index pairs kept by the miner: positives (a1[i], p[i]) and negatives (a2[j], n[j])."""

    a1: torch.Tensor
    p: torch.Tensor
    a2: torch.Tensor
    n: torch.Tensor

    def is_degenerate(self) -> bool:
        """True when every index list has at most one entry (the library then returns 0)."""
        return all(len(x) <= 1 for x in (self.a1, self.p, self.a2, self.n))


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] labels -> (positive [B, B], negative [B, B]) bool masks, the diagonal excluded."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def mine_multi_similarity(embeddings: torch.Tensor, labels: torch.Tensor,
                          epsilon: float = 0.1) -> MinedPairs:
    """Multi-similarity miner on cosine similarity S of ``embeddings`` [B, D].

    Keeps (a, p) when S_ap - epsilon < max_n S_an and (a, n) when S_an + epsilon > min_p S_ap.
    """
    with torch.no_grad():
        unit = F.normalize(embeddings.detach().float(), dim=1)
        sim = unit @ unit.t()
        positive, negative = pair_masks(labels)
        inf = torch.tensor(float('inf'), device=sim.device)
        hardest_neg = torch.where(negative, sim, -inf).max(dim=1, keepdim=True).values
        easiest_pos = torch.where(positive, sim, inf).min(dim=1, keepdim=True).values
        keep_pos = positive & (sim - epsilon < hardest_neg)
        keep_neg = negative & (sim + epsilon > easiest_pos)
        a1, p = torch.nonzero(keep_pos, as_tuple=True)
        a2, n = torch.nonzero(keep_neg, as_tuple=True)
    return MinedPairs(a1, p, a2, n)


def multi_similarity_loss(embeddings: torch.Tensor, pairs: MinedPairs, alpha: float = 1.0,
                          beta: float = 50.0, base: float = 0.0,
                          normalize: bool = True) -> torch.Tensor:
    """Mean over anchors of (1/alpha) log(1 + sum_p e^{-alpha (S_ap - base)})
    + (1/beta) log(1 + sum_n e^{beta (S_an - base)}), over the mined pairs only.

    ``embeddings``: [B, D]; S = dot product (of L2-normalised embeddings when ``normalize``).
    """
    if pairs.is_degenerate():
        return embeddings.sum() * 0.0
    x = F.normalize(embeddings.float(), dim=1) if normalize else embeddings.float()
    sim = x @ x.t()
    pos_mask = torch.zeros_like(sim, dtype=torch.bool)
    neg_mask = torch.zeros_like(sim, dtype=torch.bool)
    pos_mask[pairs.a1, pairs.p] = True
    neg_mask[pairs.a2, pairs.n] = True
    pos_loss = _log_one_plus_sum_exp(-alpha * (sim - base), pos_mask) / alpha
    neg_loss = _log_one_plus_sum_exp(beta * (sim - base), neg_mask) / beta
    return (pos_loss + neg_loss).mean()


def _log_one_plus_sum_exp(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, B] -> [B]: log(1 + sum over masked entries of exp(value)); 0 for empty rows."""
    masked = values.masked_fill(~mask, float('-inf'))
    zeros = torch.zeros(len(values), 1, dtype=values.dtype, device=values.device)
    return torch.logsumexp(torch.cat([zeros, masked], dim=1), dim=1)


def similarity_constraint(z: torch.Tensor, b: torch.Tensor, pairs: MinedPairs) -> torch.Tensor:
    """SelaVPR++ loss2: mean over all mined pairs of (<z_i, z_j> - <b_i, b_j> / bits)^2.

    ``z``: [B, bits] continuous L2-normalised codes; ``b``: [B, bits] +-1 codes (STE).
    """
    first = torch.cat([pairs.a1, pairs.a2])
    second = torch.cat([pairs.p, pairs.n])
    if len(first) == 0:
        return z.sum() * 0.0
    s_float = (z[first].float() * z[second].float()).sum(dim=1)
    s_bin = (b[first].float() * b[second].float()).sum(dim=1) / b.shape[1]
    return ((s_float - s_bin) ** 2).mean()


class MultiSimilarity(torch.nn.Module):
    """Miner + multi-similarity loss on float descriptors [B, D] with place labels [B]."""

    def __init__(self, alpha: float = 1.0, beta: float = 50.0, base: float = 0.0,
                 epsilon: float = 0.1, normalize: bool = True) -> None:
        super().__init__()
        self.alpha, self.beta, self.base = alpha, beta, base
        self.epsilon, self.normalize = epsilon, normalize

    def forward(self, descriptors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pairs = mine_multi_similarity(descriptors, labels, self.epsilon)
        return multi_similarity_loss(descriptors, pairs, self.alpha, self.beta, self.base,
                                     self.normalize)


class HashingLoss(MultiSimilarity):
    """SelaVPR++ hashing loss: MS loss on the +-1 codes b + ``weight`` x loss2(z, b).

    The miner runs on the cosine of b; loss2 uses exactly the mined pairs.
    """

    def __init__(self, weight: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.weight = weight

    def forward(self, z: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pairs = mine_multi_similarity(b, labels, self.epsilon)
        ms = multi_similarity_loss(b, pairs, self.alpha, self.beta, self.base, self.normalize)
        return ms + self.weight * similarity_constraint(z, b, pairs)
