"""Forward + backward speed of MatrixSSLLoss against the formula written the obvious way.

Same inputs, same process. The straightforward version builds the B x B centering matrix, takes a separate
Taylor log per term and multiplies P @ log Q before the trace (`matrixssl.losses.reference`). The floor is the
forward + backward of the bare d x d covariance products the formula needs. Values and gradients are compared in
float64; times are float32. Memory is what autograd saves for the backward pass (CUDA: peak allocated).

    python benchmarks/loss_speed.py [--sizes 256x512,512x1024,1024x2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from _report import header, write

from matrixssl.losses import MatrixSSLLoss
from matrixssl.losses.reference import reference_matrix_ssl_loss

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def covariance_floor(o1: torch.Tensor, o2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    batch = o1.shape[0]
    products = (t2.T @ o1, t1.T @ o2, o1.T @ o1, o2.T @ o2, t1.T @ t1, t2.T @ t2)
    return sum(p.sum() for p in products) / batch  # type: ignore[return-value]


def inputs(batch: int, dim: int, dtype: torch.dtype, device: str) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(batch + dim)
    base = torch.randn(batch, dim, generator=generator, dtype=dtype)
    views = [base + 0.5 * torch.randn(batch, dim, generator=generator, dtype=dtype) for _ in range(4)]
    return [v.to(device).requires_grad_(i < 2) for i, v in enumerate(views)]


def saved_bytes(fn: LossFn, views: list[torch.Tensor]) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*views)
    return total


def timed(fn: LossFn, views: list[torch.Tensor], repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` forward+backward seconds, and memory in MiB."""
    best = float("inf")
    cuda = views[0].is_cuda
    for _ in range(repeats + 1):  # first call warms up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = fn(*views)
        torch.autograd.grad(loss, views[:2])
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated() if cuda else saved_bytes(fn, views)
    return best, memory / 2**20


def largest_difference(ours: LossFn, reference: LossFn, views: list[torch.Tensor]) -> tuple[float, float]:
    value_ours, value_ref = ours(*views), reference(*views)
    grads_ours = torch.autograd.grad(value_ours, views[:2])
    grads_ref = torch.autograd.grad(value_ref, views[:2])
    value = abs((value_ours - value_ref) / value_ref).item()
    grad = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(grads_ours, grads_ref))
    return value, grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256x512,512x1024,1024x2048")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    ours = MatrixSSLLoss()
    rows = [
        "| B | d | ours (ms) | straightforward (ms) | speed-up | floor (ms) | ours / floor | ours MiB | "
        "straightforward MiB | value rel. diff (f64) | grad rel. diff (f64) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in args.sizes.split(","):
        batch, dim = (int(x) for x in size.split("x"))
        views32 = inputs(batch, dim, torch.float32, args.device)
        t_ours, m_ours = timed(ours, views32, args.repeats)
        t_ref, m_ref = timed(reference_matrix_ssl_loss, views32, args.repeats)
        t_floor, _ = timed(covariance_floor, views32, args.repeats)
        value_diff, grad_diff = largest_difference(
            ours, reference_matrix_ssl_loss, inputs(batch, dim, torch.float64, "cpu")
        )
        rows.append(
            f"| {batch} | {dim} | {1e3 * t_ours:.1f} | {1e3 * t_ref:.1f} | {t_ref / t_ours:.1f}x | "
            f"{1e3 * t_floor:.1f} | {t_ours / t_floor:.2f} | {m_ours:.1f} | {m_ref:.1f} | "
            f"{value_diff:.1e} | {grad_diff:.1e} |"
        )
        print(rows[-1], flush=True)
    text = header("MatrixSSLLoss speed: forward + backward") + "\n".join(rows) + "\n"
    write("loss_speed.md", text)


if __name__ == "__main__":
    main()
