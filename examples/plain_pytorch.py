"""Matrix-SSL in a plain PyTorch training loop, with only the core install (torch and numpy).

What it shows: `MatrixSSLLoss` is an ordinary `nn.Module`. A student (encoder, projector, predictor) sees two
augmented views of each batch, an EMA copy of the student's encoder and projector (the teacher) gives the
targets, and the loss takes the four (B, d) embeddings. The data are toy clusters made with torch
(`toy_data.py` beside this file). At the end the frozen encoder's features are scored with a nearest-centroid
classifier against the same encoder at its random initialisation, and their effective rank is printed.

Run it (about half a minute on a laptop CPU)::

    python examples/plain_pytorch.py
    python examples/plain_pytorch.py --steps 20 --batch-size 64    # a quick smoke run
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import Tensor, nn
from toy_data import augment, make_toy_data, nearest_centroid_accuracy

from matrixssl.functional import covariance, effective_rank
from matrixssl.losses import MatrixSSLLoss


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with BatchNorm and ReLU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(b), nn.ReLU()]
    return nn.Sequential(*layers)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← momentum · teacher + (1 - momentum) · student; BatchNorm statistics are copied."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.lerp_(s, 1.0 - momentum)
    for buffer, source in zip(teacher.buffers(), student.buffers()):
        buffer.copy_(source)


def features(encoder: nn.Module, x: Tensor) -> Tensor:
    encoder.eval()
    with torch.no_grad():
        return encoder(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--samples", type=int, default=4096, help="training samples (the test set is a quarter)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    x, y = make_toy_data(args.samples + args.samples // 4, seed=args.seed)
    x_train, y_train, x_test, y_test = (
        x[: args.samples],
        y[: args.samples],
        x[args.samples :],
        y[args.samples :],
    )
    dim, width, embedding = x_train.shape[1], 128, 64

    encoder = mlp([dim, width, width])
    projector = mlp([width, width, embedding])
    predictor = mlp([embedding, width, embedding])
    random_encoder = copy.deepcopy(encoder)  # kept only for the comparison at the end
    student = nn.Sequential(encoder, projector)
    teacher = copy.deepcopy(student).requires_grad_(False)

    loss_fn = MatrixSSLLoss()  # official defaults; print(loss_fn) shows every setting
    print(loss_fn)
    optimizer = torch.optim.AdamW(
        [*student.parameters(), *predictor.parameters()], lr=2e-3, weight_decay=1e-4
    )

    for step in range(args.steps):
        batch = x_train[torch.randint(len(x_train), (args.batch_size,))]
        view_1, view_2 = augment(batch), augment(batch)
        online_1, online_2 = predictor(student(view_1)), predictor(student(view_2))
        with torch.no_grad():
            target_1, target_2 = teacher(view_1), teacher(view_2)
        loss = loss_fn(online_1, online_2, target_1, target_2)  # each (B, 64)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        momentum = 0.99 + 0.01 * step / max(args.steps - 1, 1)  # 0.99 → 1, as in BYOL and Matrix-SSL
        ema_update(teacher, student, momentum)
        if step % max(args.steps // 5, 1) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")

    raw = nearest_centroid_accuracy(x_train, y_train, x_test, y_test)
    print(f"raw inputs: nearest-centroid accuracy {raw:.1f}%")
    for name, model in (("random encoder", random_encoder), ("trained encoder", encoder)):
        train_features, test_features = features(model, x_train), features(model, x_test)
        accuracy = nearest_centroid_accuracy(train_features, y_train, test_features, y_test)
        rank = float(effective_rank(covariance(test_features)))
        print(f"{name}: nearest-centroid accuracy {accuracy:.1f}%, effective rank {rank:.1f} / {width}")


if __name__ == "__main__":
    main()
