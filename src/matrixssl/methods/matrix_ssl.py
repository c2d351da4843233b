"""Matrix-SSL as a training method: predictor on the online branch, EMA teacher as target."""

from __future__ import annotations

from torch import Tensor

from matrixssl.config import Config
from matrixssl.data import DatasetInfo
from matrixssl.losses import MatrixSSLLoss
from matrixssl.methods.base import SSLMethod
from matrixssl.models import Predictor


class MatrixSSL(SSLMethod):
    uses_teacher = True
    supports_local_views = True  # local views are compared with both teachers (`multi_view_terms`)

    def __init__(self, config: Config, *, info: DatasetInfo, steps_per_epoch: int) -> None:
        super().__init__(config, info=info, steps_per_epoch=steps_per_epoch)
        m, loss = config.model, config.loss
        self.predictor = Predictor(m.projector_dim, m.predictor_hidden_dim)
        self.loss_fn = MatrixSSLLoss(
            target_scale=loss.target_scale,
            ridge=loss.ridge,
            gamma=loss.gamma,
            taylor_order=loss.taylor_order,
            trace_term=loss.trace_term,
            online_uniformity=loss.online_uniformity,
        )

    def loss_from_views(self, online: list[Tensor], teacher: list[Tensor]) -> dict[str, Tensor]:
        predicted = [self.predictor(z) for z in online]
        terms = self.loss_fn.multi_view_terms(predicted, teacher)
        parts = terms._asdict()
        if not self.loss_fn.online_uniformity:
            del parts["online_uniformity"]  # not computed
        return parts
