"""Matrix-SSL: matrix uniformity + matrix alignment (Zhang et al., ICML 2024, arXiv 2305.17326).

With rows L2-normalised and centred, C(a, b) = (1/B) aᵀ b (d x d), ridge μ, target scale λ:

    uniformity  U(t, o) = -tr( λI · log(C(t, o) + μI) )          = -λ · tr log(C(t, o) + μI)
    alignment   A(t, o) = -tr( (C(t, t) + μI) · log(C(o, o) + μI) )
    loss        L = ½ [ U(t₂, o₁) + U(t₁, o₂) + γ·A(t₂, o₁) + γ·A(t₁, o₂) ]

t = teacher (target) embeddings, held constant; o = online (student, after the predictor) embeddings.
Optional, not in the paper: `online_uniformity=β` adds β·½[U(o₁, o₁) + U(o₂, o₂)], which (unlike U(t, o)) can
raise the rank of the online embeddings when the teacher has collapsed.

Official code vs paper. The defaults reproduce the official code, which produced the published numbers: the
matrix log is the 4th-order Taylor series around I, there is no +tr(Q) term of the matrix cross-entropy, and
the identity target is λI with λ = 1. The paper's variant is `target_scale=None` (target I/d),
`trace_term=True` (exact MCE = tr(-P log Q + Q)) and `taylor_order=None` (exact log). The paper's ridge "λ" is
`ridge` here; the code's `lamda` is `target_scale`.

Speed. Writing log X = Σ_j a_j N^j in powers of the covariance N (re-expanding the Taylor series around
μI) turns every term into traces of powers: tr(λ log(C + μI)) needs tr(C^j), and tr(P log S) needs tr(S^j)
and tr(C(t,t) S^j). Those traces are taken in the B x B Gram space when B < d (cyclicity of the trace), with
powers formed only up to half the order. No centering matrix, no product with P, no d x d log is formed.

Usage (every input a (B, d) batch of embeddings, B >= 2; the loss normalises and centres them itself)::

    loss_fn = MatrixSSLLoss()
    loss = loss_fn(online_1, online_2, teacher_1.detach(), teacher_2.detach())
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from matrixssl.functional import centred, matrix_log, taylor_log_coefficients, trace_powers
from matrixssl.losses._inputs import EmbeddingLoss, prepare


class MatrixSSLTerms(NamedTuple):
    """The loss and its parts (each averaged over the view pairs), for logging; all 0-d tensors.

    Attributes:
        loss: uniformity + γ·alignment + β·online_uniformity, what `MatrixSSLLoss.forward` returns.
        uniformity: the mean of U(t, o) over the pairs.
        alignment: the mean of A(t, o) over the pairs (unweighted; zero when γ = 0).
        online_uniformity: the mean of U(o, o) over the view pairs (a local view counts once per target; unweighted;
            zero when β = 0).
    """

    loss: Tensor
    uniformity: Tensor
    alignment: Tensor
    online_uniformity: Tensor


class _Settings(NamedTuple):
    target_scale: float | None
    ridge: float
    taylor_order: int | None
    trace_term: bool


def _check_settings(settings: _Settings) -> None:
    if settings.ridge <= 0 and settings.taylor_order is None:
        raise ValueError(f"ridge must be > 0 for the exact matrix log, got {settings.ridge}")
    if settings.ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {settings.ridge}")
    if settings.target_scale is not None and settings.target_scale < 0:
        raise ValueError(
            f"target_scale must be >= 0 (or None for the paper's I/d), got {settings.target_scale}"
        )
    if settings.taylor_order is not None and (
        not isinstance(settings.taylor_order, int) or settings.taylor_order < 1
    ):
        raise ValueError(
            f"taylor_order must be a positive integer or None (exact), got {settings.taylor_order}"
        )


class _DirectionTerms(NamedTuple):
    uniformity: Tensor
    alignment: Tensor
    online_uniformity: Tensor
    spectral_radius_bound: Tensor | None


# Every helper below takes stacks of matrices (..., n, n) and returns one value per matrix (...), so that all
# the view pairs of a step go through each operation once.


def _trace(x: Tensor) -> Tensor:
    return x.diagonal(dim1=-2, dim2=-1).sum(-1)


def _gram_weighted_traces(cross: Tensor, gram: Tensor, order: int) -> list[Tensor]:
    """[tr(Mᵀ G^{m} M) for m = 0..order-1] with R_i = G^i M and tr(Mᵀ G^{a+b} M) = <R_a, R_b> (G symmetric)."""
    rows = [cross]
    while 2 * len(rows) < order + 1:
        rows.append(gram @ rows[-1])
    traces = []
    for m in range(order):
        a = m // 2
        traces.append((rows[a] * rows[m - a]).sum((-2, -1)))
    return traces


def _feature_weighted_traces(weight: Tensor, s: Tensor, order: int) -> list[Tensor]:
    """[tr(W S^j) for j = 1..order], W and S symmetric, with tr(W S^{a+b}) = <W S^a, S^b>."""
    powers = [s]
    while 2 * len(powers) < order:
        powers.append(powers[-1] @ s)
    weighted = [weight]
    traces = []
    for j in range(1, order + 1):
        b = min(j, len(powers))
        while len(weighted) <= j - b:
            weighted.append(weighted[-1] @ s)
        traces.append((weighted[j - b] * powers[b - 1]).sum((-2, -1)))
    return traces


def _taylor_trace_log(traces: list[Tensor], dim: int, settings: _Settings) -> Tensor:
    """Σ_j a_j tr(C^j) from the traces [tr C, ..., tr C^order]: the Taylor tr log(C + μI)."""
    coefficients = taylor_log_coefficients(len(traces), settings.ridge - 1.0)
    return coefficients[0] * dim + torch.stack([c * t for c, t in zip(coefficients[1:], traces)]).sum(0)


def _trace_log(m: Tensor, dim: int, settings: _Settings) -> Tensor:
    """tr log(C + μI) of a d x d covariance C, from `m`, which has C's nonzero spectrum but may be smaller.

    Exact: a log-determinant (Sylvester moves it to the smaller side, the other d - n eigenvalues are μ).
    Taylor: Σ_j a_j tr(C^j) with tr(C^j) = tr(m^j).
    """
    ridge = settings.ridge
    if settings.taylor_order is None:
        eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
        return torch.linalg.slogdet(m + ridge * eye)[1] + (dim - m.shape[-1]) * math.log(ridge)
    return _taylor_trace_log(trace_powers(m, settings.taylor_order), dim, settings)


class _OnlineStats(NamedTuple):
    """What every pair that shares one online view needs from it, computed once per view; each field stacks
    the views along its leading dimensions.

    `s` has C(o, o)'s nonzero spectrum (the B x B Gram when B < d); `log_cov` is log(C(o, o) + μI) (exact log,
    alignment on); `s_traces` are tr(S^j) (Taylor); `uniformity` is U(o, o) (zero when off).
    """

    online: Tensor
    s: Tensor
    log_cov: Tensor | None
    s_traces: list[Tensor] | None
    uniformity: Tensor

    def select(self, views: Tensor) -> _OnlineStats:
        """The stats of the views at these indices of the leading dimension (repeats allowed)."""
        return _OnlineStats(
            self.online[views],
            self.s[views],
            None if self.log_cov is None else self.log_cov[views],
            None if self.s_traces is None else [t[views] for t in self.s_traces],
            self.uniformity[views],
        )


def _online_stats(
    online: Tensor, settings: _Settings, alignment: bool, online_uniformity: bool
) -> _OnlineStats:
    """The shared quantities of online views (..., B, d); only what the enabled terms need is formed."""
    batch, dim = online.shape[-2:]
    scale = 1.0 / dim if settings.target_scale is None else settings.target_scale
    s = online @ online.mT / batch if batch < dim else online.mT @ online / batch
    log_cov, s_traces, u_online = None, None, online.new_zeros(online.shape[:-2])
    if settings.taylor_order is None:
        if alignment:
            eye = torch.eye(dim, dtype=online.dtype, device=online.device)
            covariance = s if batch >= dim else online.mT @ online / batch  # s is C(o, o) unless B < d
            log_cov = matrix_log(covariance + settings.ridge * eye)
            if online_uniformity:  # tr log(C + μI) is the trace of the log just formed
                u_online = -scale * _trace(log_cov)
        elif online_uniformity:
            u_online = -scale * _trace_log(s, dim, settings)
    elif alignment or online_uniformity:
        s_traces = trace_powers(s, settings.taylor_order)
        if online_uniformity:
            u_online = -scale * _taylor_trace_log(s_traces, dim, settings)
    if settings.trace_term and online_uniformity:
        u_online = u_online + _trace(s) + settings.ridge * dim
    return _OnlineStats(online, s, log_cov, s_traces, u_online)


def _direction(
    target: Tensor, stats: _OnlineStats, settings: _Settings, uniformity: bool, alignment: bool
) -> _DirectionTerms:
    """U(t, o) and A(t, o) for pairs of targets (..., B, d) and online views (`stats`, the same leading
    dimensions), U(o, o) passed on from `stats`; inputs normalised, centred."""
    online, s = stats.online, stats.s
    batch, dim = online.shape[-2:]
    scale = 1.0 / dim if settings.target_scale is None else settings.target_scale
    ridge = settings.ridge
    zero = online.new_zeros(online.shape[:-2])
    gram_space = batch < dim
    # K has the same nonzero spectrum as C(t, o) = tᵀo / B; S likewise for C(o, o).
    k = online @ target.mT / batch if gram_space else target.mT @ online / batch
    u = -scale * _trace_log(k, dim, settings) if uniformity else zero
    a = zero
    bound = None
    if settings.taylor_order is None:
        if alignment:
            assert stats.log_cov is not None
            eye = torch.eye(dim, dtype=online.dtype, device=online.device)
            p = target.mT @ target / batch + ridge * eye
            a = -(p * stats.log_cov).sum((-2, -1))
    else:
        order = settings.taylor_order
        if alignment:
            assert stats.s_traces is not None
            coefficients = taylor_log_coefficients(order, ridge - 1.0)
            if gram_space:
                cross_traces = _gram_weighted_traces(k, s, order)
            else:
                cross_traces = _feature_weighted_traces(target.mT @ target / batch, s, order)
            total = coefficients[0] * (
                target.square().sum((-2, -1)) / batch + ridge * dim
            )  # tr C(t, t) + μ d
            for c, cross, plain in zip(coefficients[1:], cross_traces, stats.s_traces):
                total = total + c * (cross + ridge * plain)
            a = -total
        with torch.no_grad():
            # Spectral radius of X - I <= |μ - 1| + ||N||_F for N = C(t,o) and N = C(o,o), over all pairs.
            norms = torch.linalg.matrix_norm
            bound = abs(ridge - 1.0) + torch.maximum(norms(k).max(), norms(s).max())
    if settings.trace_term:  # each part gets its own +tr Q, and only when it is computed
        if uniformity:
            u = u + _trace(k) + ridge * dim
        if alignment:
            a = a + _trace(s) + ridge * dim
    return _DirectionTerms(u, a, stats.uniformity, bound)


def _pair_indices(views: int, targets: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(target i, online view j) indices of every pair with i != j, ordered by j then i. Made on the device
    by slicing a range around the pairs (j, j) (a list copied to a GPU would make the host wait for it)."""
    grid = torch.arange(
        views * targets, device=device
    )  # pair (i, j) at j * targets + i; (j, j) at j * (targets + 1)
    ends = [j * (targets + 1) for j in range(1, targets)] + [views * targets]
    kept = torch.cat([grid[j * (targets + 1) + 1 : end] for j, end in enumerate(ends)])
    return kept % targets, kept // targets


class _MatrixLossBase(EmbeddingLoss):
    """Shared settings, input preparation and the one-time Taylor convergence warning."""

    def __init__(
        self,
        *,
        target_scale: float | None,
        ridge: float,
        taylor_order: int | None,
        trace_term: bool,
        gather_distributed: bool,
    ) -> None:
        super().__init__(gather_distributed=gather_distributed)
        self.settings = _Settings(target_scale, ridge, taylor_order, trace_term)
        _check_settings(self.settings)
        self._warned = False
        self._radius_bound: Tensor | None = None  # the last step's, kept while check_values is off

    def _prepared(self, z: Tensor, target: bool = False) -> Tensor:
        """Normalised, gathered when asked, centred; a target is also detached."""
        return centred(prepare(z, gather_distributed=self.gather_distributed, detach=target))

    def _pair(self, online: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return self._prepared(online), self._prepared(target, target=True)

    def _online_stats(self, online: Tensor, alignment: bool, online_uniformity: bool = False) -> _OnlineStats:
        with torch.autocast(device_type=online.device.type, enabled=False):
            return _online_stats(online, self.settings, alignment, online_uniformity)

    def _direction(
        self, target: Tensor, stats: _OnlineStats, uniformity: bool, alignment: bool
    ) -> _DirectionTerms:
        with torch.autocast(device_type=target.device.type, enabled=False):
            terms = _direction(target, stats, self.settings, uniformity, alignment)
        if terms.spectral_radius_bound is not None and not self._warned:
            self._radius_bound = terms.spectral_radius_bound.detach()
            if self.check_values:
                self.deferred_checks()
        return terms

    def deferred_checks(self) -> None:
        """Warn once when the last Taylor series may have been outside its convergence radius."""
        if self._radius_bound is None or self._warned:
            return
        radius = float(self._radius_bound)
        self._radius_bound = None
        if radius >= 1.0:
            self._warned = True
            warnings.warn(
                f"Matrix-SSL: the Taylor series of the matrix log may be outside its convergence radius "
                f"(|ridge - 1| + ||C||_F = {radius:.3f} >= 1), so the loss can be inaccurate. "
                f"Use a ridge closer to 1, or taylor_order=None for the exact log.",
                RuntimeWarning,
                stacklevel=3,
            )


class MatrixUniformityLoss(_MatrixLossBase):
    """Matrix uniformity, one direction: U(t, o) = -tr(λI · log(C(target, online) + μI)).

    Pulls the cross-covariance towards a spread (identity-like) spectrum; with the official defaults most of
    the alignment signal also comes from here, because C(t, o) couples the two branches. With
    `trace_term=True`, tr(C(t, o) + μI) is added (the matrix cross-entropy's +tr Q).

    Args:
        target_scale: λ of the identity target λI; None gives the paper's I/d.
        ridge: μ added to the covariance before the log.
        taylor_order: order of the Taylor matrix log; None for the exact log (then `ridge` must be > 0).
        trace_term: add the +tr(Q) term of the matrix cross-entropy.
        gather_distributed: compute the covariance on the batch gathered from all ranks.
    """

    def __init__(
        self,
        *,
        target_scale: float | None = 1.0,
        ridge: float = 1.0,
        taylor_order: int | None = 4,
        trace_term: bool = False,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(
            target_scale=target_scale,
            ridge=ridge,
            taylor_order=taylor_order,
            trace_term=trace_term,
            gather_distributed=gather_distributed,
        )

    def forward(self, online: Tensor, target: Tensor) -> Tensor:
        """U(target, online) of one pair of views.

        Args:
            online: (B, d) student embeddings (predictor outputs); the gradient flows into them.
            target: (B, d) teacher embeddings of the other view; detached here.

        Returns:
            0-d tensor.
        """
        self.check(online=online, target=target)
        o, t = self._pair(online, target)
        return self._direction(
            t, self._online_stats(o, alignment=False), uniformity=True, alignment=False
        ).uniformity


class MatrixAlignmentLoss(_MatrixLossBase):
    """Matrix alignment, one direction: A(t, o) = -tr((C(t, t) + μI) · log(C(o, o) + μI)).

    The matrix cross-entropy of the student's covariance against the teacher's: smallest when the two
    covariances agree. With `trace_term=True`, tr(C(o, o) + μI) is added (the exact MCE's +tr Q).

    Args:
        ridge: μ added to both covariances.
        taylor_order: order of the Taylor matrix log; None for the exact log (then `ridge` must be > 0).
        trace_term: add the +tr(Q) term of the matrix cross-entropy.
        gather_distributed: compute the covariances on the batch gathered from all ranks.
    """

    def __init__(
        self,
        *,
        ridge: float = 1.0,
        taylor_order: int | None = 4,
        trace_term: bool = False,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(
            target_scale=1.0,
            ridge=ridge,
            taylor_order=taylor_order,
            trace_term=trace_term,
            gather_distributed=gather_distributed,
        )

    def forward(self, online: Tensor, target: Tensor) -> Tensor:
        """A(target, online) of one pair of views.

        Args:
            online: (B, d) student embeddings (predictor outputs); the gradient flows into them.
            target: (B, d) teacher embeddings of the other view; detached here.

        Returns:
            0-d tensor.
        """
        self.check(online=online, target=target)
        o, t = self._pair(online, target)
        return self._direction(
            t, self._online_stats(o, alignment=True), uniformity=False, alignment=True
        ).alignment


class MatrixSSLLoss(_MatrixLossBase):
    """Matrix-SSL loss: matrix uniformity + γ · matrix alignment; the official code's formulation by default.

        L = ½[U(t₂,o₁) + U(t₁,o₂)] + γ·½[A(t₂,o₁) + A(t₁,o₂)] + β·½[U(o₁,o₁) + U(o₂,o₂)]

    with U and A as in `MatrixUniformityLoss` and `MatrixAlignmentLoss`, t the teacher and o the student
    embeddings of views 1 and 2, C(a, b) the centred cross-covariance of L2-normalised rows.

    Args:
        target_scale: λ of the identity target λI (official code: 1). None gives the paper's I/d.
        ridge: μ added to every covariance before the log (official README command: 1).
        gamma: weight of the alignment term (γ = 0 is uniformity only, which behaves like MEC).
        taylor_order: order of the Taylor matrix log (official: 4); None for the exact log.
        trace_term: add the +tr(Q) term of the matrix cross-entropy (paper), absent in the official code.
        gather_distributed: compute covariances on the batch gathered from all ranks, with correct gradients.
        online_uniformity: weight β of an extra uniformity on the online covariance, β·U(o, o) (not in the
            paper; 0 = off). U(t, o)'s gradient stays in the span of the teacher embeddings, so it cannot raise
            their rank; U(o, o) can.

    `forward(online_1, online_2, target_1, target_2)`: (B, d) embeddings of the two views; online = predictor
    outputs, target = teacher outputs (no gradient flows into them). `terms(...)` also returns the parts,
    `multi_view_terms` takes more views (multi-crop). The rows are L2-normalised and centred here. `repr()`
    shows every setting, so `MatrixSSLLoss()` and `MatrixSSLLoss.paper()` can be told apart in a log.

    Example:
        ```python
        loss_fn = MatrixSSLLoss()                     # official code's defaults
        loss = loss_fn(online_1, online_2, teacher_1, teacher_2)   # each (B, d)
        loss.backward()
        ```
    """

    def __init__(
        self,
        *,
        target_scale: float | None = 1.0,
        ridge: float = 1.0,
        gamma: float = 1.0,
        taylor_order: int | None = 4,
        trace_term: bool = False,
        gather_distributed: bool = False,
        online_uniformity: float = 0.0,
    ) -> None:
        super().__init__(
            target_scale=target_scale,
            ridge=ridge,
            taylor_order=taylor_order,
            trace_term=trace_term,
            gather_distributed=gather_distributed,
        )
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if online_uniformity < 0:
            raise ValueError(f"online_uniformity must be >= 0, got {online_uniformity}")
        self.gamma = gamma
        self.online_uniformity = online_uniformity

    @classmethod
    def paper(
        cls, *, gamma: float = 1.0, ridge: float = 1.0, gather_distributed: bool = False
    ) -> MatrixSSLLoss:
        """The paper's formulation: target I/d, exact matrix cross-entropy (with +tr Q), exact log.

        Args:
            gamma: weight γ of the alignment term.
            ridge: μ added to every covariance (must be > 0 for the exact log).
            gather_distributed: compute covariances on the batch gathered from all ranks.

        Returns:
            A `MatrixSSLLoss` with `target_scale=None, taylor_order=None, trace_term=True`.
        """
        return cls(
            target_scale=None,
            ridge=ridge,
            gamma=gamma,
            taylor_order=None,
            trace_term=True,
            gather_distributed=gather_distributed,
        )

    def terms(self, online_1: Tensor, online_2: Tensor, target_1: Tensor, target_2: Tensor) -> MatrixSSLTerms:
        """The two-view loss and its parts: ½[U(t₂,o₁) + U(t₁,o₂)] etc., see `MatrixSSLTerms`.

        Args:
            online_1: (B, d) student embeddings of view 1 (predictor outputs).
            online_2: (B, d) student embeddings of view 2.
            target_1: (B, d) teacher embeddings of view 1; detached here.
            target_2: (B, d) teacher embeddings of view 2; detached here.

        Returns:
            The loss and its unweighted parts, each a 0-d tensor.
        """
        return self.multi_view_terms([online_1, online_2], [target_1, target_2])

    def multi_view_terms(self, online: Sequence[Tensor], targets: Sequence[Tensor]) -> MatrixSSLTerms:
        """Every online view against the target of every other view, averaged over those pairs.

        `targets[i]` is the teacher output of view i, for the first len(targets) online views; the views after
        them (multi-crop's local views) have no target of their own. With two of each this is the two-view loss.

        Args:
            online: V >= 2 student embeddings, each (B, d), global views first.
            targets: 2 <= T <= V teacher embeddings, each (B, d), of the first T views; detached here.

        Returns:
            The loss and its unweighted parts, each a 0-d tensor.

        Raises:
            ValueError: fewer than two targets, fewer online views than targets, or bad shapes.
        """
        self.check(
            **{f"online_{i + 1}": z for i, z in enumerate(online)},
            **{f"target_{i + 1}": z for i, z in enumerate(targets)},
        )
        if len(targets) < 2 or len(online) < len(targets):
            raise ValueError(
                f"need at least two targets and an online view for each, got {len(online)} online views "
                f"and {len(targets)} targets"
            )
        need_alignment, need_online = self.gamma != 0, self.online_uniformity != 0
        # What depends on the online view alone (its covariance's log or traces, U(o, o)) is formed once per
        # view and shared by every target it is paired with; then all pairs go through each step at once.
        o = self._online_stats(torch.stack([self._prepared(z) for z in online]), need_alignment, need_online)
        t = torch.stack([self._prepared(z, target=True) for z in targets])
        target_index, online_index = _pair_indices(len(online), len(targets), t.device)
        terms = self._direction(t[target_index], o.select(online_index), True, need_alignment)
        uniformity, alignment, online_uniformity = (part.mean() for part in terms[:3])
        loss = uniformity + self.gamma * alignment + self.online_uniformity * online_uniformity
        return MatrixSSLTerms(loss, uniformity, alignment, online_uniformity)

    def forward(self, online_1: Tensor, online_2: Tensor, target_1: Tensor, target_2: Tensor) -> Tensor:
        """The two-view Matrix-SSL loss.

        Args:
            online_1: (B, d) student embeddings of view 1 (predictor outputs); B >= 2.
            online_2: (B, d) student embeddings of view 2.
            target_1: (B, d) teacher embeddings of view 1; detached here.
            target_2: (B, d) teacher embeddings of view 2; detached here.

        Returns:
            0-d tensor (float32 or float64, also under autocast).
        """
        return self.terms(online_1, online_2, target_1, target_2).loss
