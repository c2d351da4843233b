"""MatrixSSLLoss against the term-by-term reference, identities, numerics and input errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from matrixssl.functional import effective_rank, matrix_cross_entropy
from matrixssl.losses import MatrixAlignmentLoss, MatrixSSLLoss, MatrixUniformityLoss
from matrixssl.losses.reference import reference_matrix_ssl_loss


def views(batch: int, dim: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    base = torch.randn(batch, dim, dtype=dtype)
    return [(base + 0.5 * torch.randn(batch, dim, dtype=dtype)).requires_grad_() for _ in range(4)]


SETTINGS = [
    dict(),
    dict(ridge=0.5),
    dict(ridge=0.8, taylor_order=3, gamma=0.3),
    dict(target_scale=0.25, taylor_order=6),
    dict(target_scale=None, trace_term=True),
    dict(taylor_order=None),
    dict(target_scale=None, trace_term=True, taylor_order=None, ridge=0.7),
    dict(online_uniformity=0.5),
    dict(taylor_order=None, ridge=0.05, online_uniformity=1.0),
    dict(target_scale=None, trace_term=True, taylor_order=None, online_uniformity=0.3),
    dict(gamma=0.0, online_uniformity=0.5),
    dict(gamma=0.0, taylor_order=None, ridge=0.05, online_uniformity=0.5),
    dict(trace_term=True, online_uniformity=0.5),
]


@pytest.mark.parametrize("batch,dim", [(48, 16), (12, 40)])
@pytest.mark.parametrize("settings", SETTINGS)
def test_value_and_gradients_equal_reference(batch: int, dim: int, settings: dict) -> None:
    o1, o2, t1, t2 = views(batch, dim)
    ours = MatrixSSLLoss(**settings)(o1, o2, t1, t2)
    grads = torch.autograd.grad(ours, [o1, o2])
    reference = reference_matrix_ssl_loss(o1, o2, t1, t2, **settings)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-10, abs=1e-12)
    if settings.get("taylor_order", 4) is None and batch < dim:
        # B < d: the covariances have a repeated eigenvalue μ, where autograd through the reference's
        # eigenvectors gives NaN. Check our gradient against central differences along random directions.
        for _ in range(3):
            v1, v2 = torch.randn_like(o1), torch.randn_like(o2)
            h = 1e-6
            plus = reference_matrix_ssl_loss(o1 + h * v1, o2 + h * v2, t1, t2, **settings)
            minus = reference_matrix_ssl_loss(o1 - h * v1, o2 - h * v2, t1, t2, **settings)
            directional = ((grads[0] * v1).sum() + (grads[1] * v2).sum()).item()
            assert directional == pytest.approx(((plus - minus) / (2 * h)).item(), rel=1e-6, abs=1e-9)
        return
    expected = torch.autograd.grad(reference, [o1, o2])
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-12)


def test_loss_is_the_symmetrised_sum_of_the_one_direction_losses() -> None:
    o1, o2, t1, t2 = views(32, 24)
    gamma = 0.7
    u, a = MatrixUniformityLoss(), MatrixAlignmentLoss()
    expected = 0.5 * (u(o1, t2) + u(o2, t1) + gamma * (a(o1, t2) + a(o2, t1)))
    terms = MatrixSSLLoss(gamma=gamma).terms(o1, o2, t1, t2)
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert terms.loss.item() == pytest.approx((terms.uniformity + gamma * terms.alignment).item(), rel=1e-12)
    only_uniformity = MatrixSSLLoss(gamma=0.0)(o1, o2, t1, t2)
    assert only_uniformity.item() == pytest.approx(terms.uniformity.item(), rel=1e-12)
    # The online uniformity is U(o, o): the uniformity loss with the online branch as its own target.
    beta = 0.4
    extended = MatrixSSLLoss(gamma=gamma, online_uniformity=beta).terms(o1, o2, t1, t2)
    assert extended.online_uniformity.item() == pytest.approx(0.5 * (u(o1, o1) + u(o2, o2)).item(), rel=1e-12)
    assert extended.loss.item() == pytest.approx(
        (terms.loss + beta * extended.online_uniformity).item(), rel=1e-12
    )


@pytest.mark.parametrize("batch,dim", [(32, 16), (12, 40)])
@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(online_uniformity=0.5),
        dict(taylor_order=None, ridge=0.05, online_uniformity=0.3),
        dict(taylor_order=None, ridge=0.05, gamma=0.0, online_uniformity=0.3),
    ],
)
def test_multi_crop_averages_every_view_against_every_other_views_target(
    batch: int, dim: int, settings: dict
) -> None:
    o1, o2, t1, t2 = views(batch, dim)
    l1, l2 = views(batch, dim)[:2]
    ours = MatrixSSLLoss(**settings).multi_view_terms([o1, o2, l1, l2], [t1, t2]).loss
    # reference(x, x, t2, t1) = ½[pair(t1, x) + pair(t2, x)]: a local view against both targets.
    pairs = 2 * reference_matrix_ssl_loss(o1, o2, t1, t2, **settings) + sum(
        2 * reference_matrix_ssl_loss(local, local, t2, t1, **settings) for local in (l1, l2)
    )
    expected = pairs / 6  # o1 and o2 have one pair each, each local view two
    assert ours.item() == pytest.approx(expected.item(), rel=1e-10)
    if settings.get("taylor_order", 4) is not None or batch >= dim:  # else see the reference test's note
        for g, e in zip(torch.autograd.grad(ours, [o1, l2]), torch.autograd.grad(expected, [o1, l2])):
            torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="need at least two targets and an online view for each"):
        MatrixSSLLoss(**settings).multi_view_terms([o1], [t1, t2])


def test_parts_that_are_off_report_zero_also_with_the_trace_term() -> None:
    o1, o2, t1, t2 = views(24, 8)
    terms = MatrixSSLLoss.paper(gamma=0.0).terms(o1, o2, t1, t2)
    assert terms.alignment.item() == 0.0 and terms.online_uniformity.item() == 0.0
    assert terms.loss.item() == pytest.approx(terms.uniformity.item(), rel=1e-12)


def test_online_uniformity_raises_the_rank_a_collapsed_teacher_cannot() -> None:
    """Against a rank-2 teacher, descending U(t, o) + A(t, o) keeps o near rank 2; adding U(o, o) spreads it."""
    torch.manual_seed(0)
    target = torch.randn(64, 2, dtype=torch.float64) @ torch.randn(2, 16, dtype=torch.float64)
    start = target + 0.05 * torch.randn(64, 16, dtype=torch.float64)
    ranks = {}
    for beta in (0.0, 1.0):
        online = start.clone().requires_grad_()
        loss_fn = MatrixSSLLoss(ridge=0.05, taylor_order=None, online_uniformity=beta)
        optimizer = torch.optim.SGD([online], lr=1.0)
        for _ in range(50):
            optimizer.zero_grad()
            loss_fn(online, online, target, target).backward()
            optimizer.step()
        ranks[beta] = effective_rank(online.detach() - online.detach().mean(0)).item()
    assert effective_rank(start - start.mean(0)).item() == pytest.approx(3.2, abs=0.1)
    assert ranks[0.0] < 3.2 and ranks[1.0] > 7.0, ranks


def test_no_gradient_flows_into_targets() -> None:
    o1, o2, t1, t2 = views(16, 8)
    MatrixSSLLoss()(o1, o2, t1, t2).backward()
    assert o1.grad is not None and o2.grad is not None
    assert t1.grad is None and t2.grad is None


def test_exact_paper_uniformity_is_the_matrix_cross_entropy() -> None:
    # With target = online the cross-covariance is symmetric PSD: U = MCE(λI, C + μI) exactly.
    z = torch.nn.functional.normalize(torch.randn(30, 6, dtype=torch.float64), dim=1)
    centred = z - z.mean(0)
    covariance = centred.T @ centred / 30
    u = MatrixUniformityLoss(target_scale=None, ridge=0.5, taylor_order=None, trace_term=True)(z, z)
    mce = matrix_cross_entropy(torch.eye(6, dtype=torch.float64) / 6, covariance + 0.5 * torch.eye(6))
    assert u.item() == pytest.approx(mce.item(), rel=1e-12)
    assert (
        MatrixSSLLoss.paper(ridge=0.5).settings
        == MatrixSSLLoss(target_scale=None, ridge=0.5, gamma=1.0, taylor_order=None, trace_term=True).settings
    )


def test_taylor_default_is_close_to_exact_log() -> None:
    o1, o2, t1, t2 = views(64, 32)
    taylor = MatrixSSLLoss()(o1, o2, t1, t2).item()
    exact = MatrixSSLLoss(taylor_order=None)(o1, o2, t1, t2).item()
    assert taylor == pytest.approx(exact, rel=1e-3)


@pytest.mark.parametrize("batch,dim", [(16, 8), (8, 32)])
def test_collapsed_embeddings_give_finite_loss_and_gradients(batch: int, dim: int) -> None:
    for settings in ({}, {"taylor_order": None}, {"target_scale": None, "trace_term": True}):
        row = torch.randn(1, dim, dtype=torch.float64)
        inputs = [row.repeat(batch, 1).requires_grad_() for _ in range(4)]
        loss = MatrixSSLLoss(**settings)(*inputs)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(t.grad).all() for t in inputs[:2] if t.grad is not None)


def test_repeated_eigenvalues_exact_path_is_finite() -> None:
    # Orthonormal rows: every covariance eigenvalue repeats.
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    o = q[:8].clone().requires_grad_()
    loss = MatrixSSLLoss(taylor_order=None)(o, o, q[:8], q[:8])
    (grad,) = torch.autograd.grad(loss, [o])
    assert torch.isfinite(grad).all()


def test_bf16_under_autocast_is_computed_in_float32() -> None:
    o1, o2, t1, t2 = (v.detach().float() for v in views(64, 32))
    reference = MatrixSSLLoss()(o1, o2, t1, t2)
    inputs = [v.bfloat16().requires_grad_() for v in (o1, o2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = MatrixSSLLoss()(*inputs, t1.bfloat16(), t2.bfloat16())
    loss.backward()
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-2)
    assert all(torch.isfinite(t.grad.float()).all() for t in inputs if t.grad is not None)


def test_bad_input_errors() -> None:
    loss = MatrixSSLLoss()
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        loss(x[:1], x[:1], x[:1], x[:1])
    with pytest.raises(ValueError, match="shapes must match"):
        loss(x, x, x, torch.randn(8, 5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss(x, x, x, torch.full((8, 4), math.nan))
    with pytest.raises(ValueError, match=r"\(batch, dim\)"):
        loss(x[0], x[0], x[0], x[0])
    with pytest.raises(ValueError, match="ridge must be > 0"):
        MatrixSSLLoss(ridge=0.0, taylor_order=None)
    with pytest.raises(ValueError, match="gamma"):
        MatrixSSLLoss(gamma=-1.0)


def test_warns_once_outside_the_taylor_convergence_radius() -> None:
    o1, o2, t1, t2 = views(32, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MatrixSSLLoss()(o1, o2, t1, t2)  # defaults: inside the radius, silent
    loss = MatrixSSLLoss(ridge=2.5)
    with pytest.warns(RuntimeWarning, match="convergence radius") as record:
        loss(o1, o2, t1, t2)
        loss(o1, o2, t1, t2)
    assert len(record) == 1


def test_deferred_radius_check_covers_every_view_pair() -> None:
    """Only a local view in the middle of the pair list is outside the radius (a collapsed view: ||C||_F near 1,
    so |0.5 - 1| + ||C||_F >= 1); the deferred check still warns, though neither the first pair nor the last
    alone would."""
    torch.manual_seed(0)
    collapsed = torch.randn(1, 16).sign() * torch.randn(64, 1).sign()  # every row ± one direction
    healthy = [torch.randn(64, 16) for _ in range(3)]
    targets = [torch.randn(64, 16) for _ in range(2)]
    loss = MatrixSSLLoss(ridge=0.5)
    loss.check_values = False
    loss.multi_view_terms(healthy, targets)  # no collapsed view: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss.deferred_checks()
    loss.multi_view_terms([*healthy[:2], collapsed, healthy[2]], targets)
    with pytest.warns(RuntimeWarning, match="convergence radius"):
        loss.deferred_checks()


def test_value_checks_can_wait_for_the_caller() -> None:
    """With check_values off nothing is read back per call: NaN passes through, the radius warning waits for
    deferred_checks; shapes are still checked (they need no device value)."""
    o1, o2, t1, t2 = views(32, 16)
    loss = MatrixSSLLoss(ridge=2.5)
    loss.check_values = False
    nan = torch.full_like(t2, math.nan)
    assert torch.isnan(loss(o1, o2, t1, nan))
    with pytest.raises(ValueError, match="shapes must match"):
        loss(o1, o2, t1, torch.randn(32, 15))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(o1, o2, t1, t2)  # outside the radius, but silent until the caller checks
    with pytest.warns(RuntimeWarning, match="convergence radius"):
        loss.deferred_checks()


@pytest.mark.parametrize(("views", "targets"), [(2, 2), (6, 2), (3, 3), (5, 3), (4, 4)])
def test_pair_indices_are_every_target_online_pair_but_the_same_view(views: int, targets: int) -> None:
    from matrixssl.losses.matrix_ssl import _pair_indices

    target_index, online_index = _pair_indices(views, targets, torch.device("cpu"))
    expected = [(i, j) for j in range(views) for i in range(targets) if i != j]
    assert list(zip(target_index.tolist(), online_index.tolist())) == expected
