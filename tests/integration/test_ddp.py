"""Two CPU processes under Lightning DDP (gloo) take the same first step as one process on the global batch.

The views are replaced by a deterministic transform, so both runs see identical inputs. PyTorch has no
SyncBatchNorm on CPU, so BatchNorm layers run on their running statistics here, making every embedding
independent of how the batch is split; what is compared is then the loss itself, which equals the one-process
loss only if it gathers the embeddings of all ranks. (On GPUs the trainer also turns on SyncBatchNorm.)
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from matrixssl.config import load_config
from matrixssl.data import DatasetInfo
from matrixssl.methods import METHODS, SSLMethod

GLOBAL_BATCH = 16


class DeterministicViews(SSLMethod):
    """Mixed into a method: the views are the clean image and its mirror image (plus, with local views, the
    clean image at half size), so both runs see identical inputs."""

    record_dir = ""

    def make_views(self, batch):  # type: ignore[no-untyped-def]
        images, labels = batch
        clean = self.views.eval_transform(images)
        local = torch.nn.functional.interpolate(clean, size=(14, 14), mode="bilinear", antialias=True)
        return [clean, clean.flip(-1), *[local] * self.config.data.local_views], labels

    def on_train_batch_start(self, batch, batch_index):  # type: ignore[no-untyped-def]
        for module in self.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()

    def loss_from_views(self, online, teacher):  # type: ignore[no-untyped-def]
        terms = super().loss_from_views(online, teacher)
        Path(self.record_dir, f"rank{self.global_rank}.txt").write_text(repr(terms["loss"].item()))
        return terms


# One importable subclass per method (the spawned processes unpickle the model by its class's name).
DETERMINISTIC = {
    name: type(f"Deterministic_{name}", (DeterministicViews, method), {"__module__": __name__})
    for name, method in METHODS.items()
}
globals().update({cls.__name__: cls for cls in DETERMINISTIC.values()})


def first_step_loss(
    tmp_path: Path, devices: int, local_views: int, method: str = "matrix_ssl"
) -> list[float]:
    record = tmp_path / f"devices{devices}"
    record.mkdir()
    config = load_config(
        None,
        [
            f"data.batch_size={GLOBAL_BATCH}",
            "model.width=0.125",
            "model.projector_hidden_dim=32",
            "model.projector_dim=16",
            "model.predictor_hidden_dim=8",
            f"data.local_views={local_views}",
            f"loss.method={method}",
        ],
    )
    torch.manual_seed(0)
    info = DatasetInfo("fashion-mnist", 1, 28, 10, (0.286,), (0.353,))
    model = DETERMINISTIC[method](config, info=info, steps_per_epoch=1)
    model.record_dir = str(record)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (GLOBAL_BATCH, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (GLOBAL_BATCH,), generator=generator)
    loader = DataLoader(TensorDataset(images, labels), batch_size=GLOBAL_BATCH // devices, shuffle=False)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, loader)
    return [float((record / f"rank{r}.txt").read_text()) for r in range(devices)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("local_views", [0, 1])
def test_two_process_ddp_first_step_equals_one_process(tmp_path: Path, local_views: int) -> None:
    single = first_step_loss(tmp_path, devices=1, local_views=local_views)
    double = first_step_loss(tmp_path, devices=2, local_views=local_views)
    assert double[0] == pytest.approx(double[1], rel=1e-6)
    assert double[0] == pytest.approx(single[0], rel=1e-5)


@pytest.mark.timeout(300)
# TCR's invariance term is a per-rank mean of cosines (not a batch statistic, so not gathered): rank 0's
# logged loss is its own half's; DDP's gradient averaging still gives the full-batch gradient.
@pytest.mark.parametrize("method", sorted(set(METHODS) - {"matrix_ssl", "tcr"}))
def test_every_method_with_a_local_view_gathers_like_one_process(tmp_path: Path, method: str) -> None:
    single = first_step_loss(tmp_path, devices=1, local_views=1, method=method)
    double = first_step_loss(tmp_path, devices=2, local_views=1, method=method)
    assert double[0] == pytest.approx(double[1], rel=1e-6)
    assert double[0] == pytest.approx(single[0], rel=1e-5)
