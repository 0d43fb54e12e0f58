"""The straight-through estimator of the hashing branch passes the gradient unchanged."""
import torch

from training.losses import HashingLoss
from vpr_core.model.factory import build_model
from vpr_core.model.hashing import sign_ste


def test_ste_forward_is_sign_with_zero_to_plus_one():
    z = torch.tensor([[-2.0, -0.0, 0.0, 1e-9, 3.0]], requires_grad=True)
    assert sign_ste(z).tolist() == [[-1.0, 1.0, 1.0, 1.0, 1.0]]


def test_ste_passes_the_gradient_unchanged():
    torch.manual_seed(0)
    z = torch.randn(4, 16, requires_grad=True)
    upstream = torch.randn(4, 16)
    (sign_ste(z) * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)        # identity: no clipping at |z| > 1, no scaling


def test_ste_gradient_reaches_the_hashing_head(tiny_config):
    model = build_model(tiny_config(bits=32, rerank=False)).train()
    for param in model.parameters():
        param.requires_grad_(True)
    z, b = model(torch.randn(8, 3, 28, 28))
    HashingLoss()(z, b, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).backward()
    assert model.linear4.weight.grad is not None and model.linear4.weight.grad.abs().sum() > 0
