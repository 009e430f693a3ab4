"""hidden_cka: 1 - linear CKA (Kornblith et al. 2019) over the batch's real tokens, any two widths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdistill.distill.losses import LOSSES
from kdistill.errors import KDistillError


def _cka_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    """CKA as HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels K = XX^T, L = YY^T and the centring
    matrix H = I - 11^T/n: the kernel form of the paper, computed independently of the feature form in kdistill."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ b))

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_hidden_cka_matches_the_kernel_form_on_real_tokens_only() -> None:
    loss = LOSSES.get("hidden_cka").fn
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 6, dtype=torch.float64), torch.randn(2, 4, 10, dtype=torch.float64)  # widths differ
    t[..., :3] += 2 * s[..., :3]  # some shared structure, so CKA is well inside (0, 1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    real = mask.bool()
    expected = 1 - _cka_by_hand(s[real].numpy(), t[real].numpy())
    assert 0.05 < expected < 0.95
    assert loss(s, t, mask=mask).item() == pytest.approx(expected, rel=1e-6)
    garbage = s.clone()
    garbage[~real] = float("nan")  # padding never counts, not even as NaN
    assert loss(garbage, t, mask=mask).item() == pytest.approx(expected, rel=1e-6)


def test_hidden_cka_needs_no_projection_and_punishes_a_collapsed_student() -> None:
    loss = LOSSES.get("hidden_cka").fn
    assert not LOSSES.get("hidden_cka").projectable
    torch.manual_seed(1)
    t = torch.randn(3, 5, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    # the same geometry, rotated and scaled, is a perfect match: no projection or scale matching needed
    assert loss(3.0 * t @ q, t).item() == pytest.approx(0.0, abs=1e-5)
    # every token state the same vector (the collapse benchmarks/collapse.py measured): the maximum loss, no NaN
    collapsed = torch.ones(3, 5, 4, requires_grad=True)
    value = loss(collapsed, t)
    assert value.item() == pytest.approx(1.0)
    value.backward()
    assert torch.isfinite(collapsed.grad).all()
    # a nearly collapsed student is pushed apart: the gradient step lowers the loss
    near = (torch.ones(3, 5, 4) + 0.01 * torch.randn(3, 5, 4)).requires_grad_(True)
    before = loss(near, t)
    before.backward()
    after = loss((near - 10.0 * near.grad).detach(), t)
    assert after.item() < before.item()


def test_hidden_cka_edge_cases() -> None:
    loss = LOSSES.get("hidden_cka").fn
    one_token = torch.tensor([[1, 0, 0]])
    assert loss(torch.randn(1, 3, 4), torch.randn(1, 3, 6), mask=one_token).item() == 1.0
    with pytest.raises(KDistillError, match="cover different tokens"):
        loss(torch.randn(2, 3, 4), torch.randn(2, 4, 4))
