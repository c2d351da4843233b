"""Every registered method pretrains end to end through the CLI; every shipped config loads; method details.

The runs train a few steps of a very small ResNet on a tiny Fashion-MNIST-format dataset; what is checked is
behaviour (exit code, files, steps, a finite logged loss, the MEC λ schedule), not accuracy.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, mnist_like, write_idx_split

from matrixssl.cli import main
from matrixssl.config import Config, load_config
from matrixssl.data import DatasetInfo
from matrixssl.errors import MatrixSSLError
from matrixssl.methods import METHODS, SSLMethod, build_method, check_method
from matrixssl.methods.mec import lambda_scale

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAIN_IMAGES, BATCH = 48, 16
STEPS = TRAIN_IMAGES // BATCH
INFO = DatasetInfo("fashion-mnist", 1, 28, 10, (0.286,), (0.353,))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_idx_split(root / "fashion-mnist", "train", *mnist_like(TRAIN_IMAGES, 0), gz=True)
    write_idx_split(root / "fashion-mnist", "test", *mnist_like(32, 1), gz=True)
    return root


def logged(metrics: dict, column: str) -> list[float]:
    with open(Path(metrics["logs"]) / "metrics.csv", newline="") as handle:
        return [float(row[column]) for row in csv.DictReader(handle) if row.get(column)]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_pretrains_one_epoch_through_the_cli(
    method: str, data_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / method
    argv = [
        "pretrain",
        *TINY,
        f"data.dir={data_dir}",
        f"output_dir={output}",
        f"loss.method={method}",
        "loss.mec.lambda_warmup_epochs=10",  # set explicitly: the method's own config would bring 0.5
        "trainer.max_epochs=1",
        "eval.linear_epochs=1",
    ]
    assert main(argv) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["epochs"] == 1 and metrics["global_step"] == STEPS
    losses = logged(metrics, "train/loss_step")
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    if method == "mec":
        # Default warm-up: 10 epochs of STEPS steps; step s trains with λ scaled by 1 / (8 - 7 s / (10 STEPS)).
        expected = [lambda_scale(step, 10 * STEPS) for step in range(STEPS)]
        assert logged(metrics, "train/lambda_scale_step") == pytest.approx(expected, rel=1e-6)
        assert expected[0] == pytest.approx(1 / 8)


def test_unknown_method_exits_2_with_one_line_listing_the_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "loss.method=nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unknown method 'nope'" in err and ", ".join(sorted(METHODS)) in err


def test_every_shipped_config_loads_and_names_a_registered_method() -> None:
    paths = sorted(CONFIGS.glob("*/*.yaml"))
    for dataset in ("fashion-mnist", "cifar10"):
        names = {p.stem for p in paths if p.parent.name == dataset}
        assert names >= set(METHODS) | {"matrix_ssl_paper"}, dataset
    for path in paths:
        assert load_config(path).loss.method in METHODS


def test_fashion_mnist_comparison_changes_only_the_method() -> None:
    reference = load_config(CONFIGS / "fashion-mnist" / "matrix_ssl.yaml")
    for path in sorted((CONFIGS / "fashion-mnist").glob("*.yaml")):
        config = load_config(path)
        # Multi-crop is the quick config's alone (only its loss takes local views); the rest is shared.
        assert config.data.local_views == (4 if path.name == "matrix_ssl.yaml" else 0), path.name
        config.data.local_views = reference.data.local_views
        for section in ("data", "model", "teacher", "trainer", "eval"):
            assert getattr(config, section) == getattr(reference, section), (path.name, section)
        # Where the paper prescribes its own optimiser (the config says why in a comment).
        prescribed = {"simsiam.yaml": ("sgd", 0.05), "vicreg.yaml": ("lars", 0.2)}
        optimizer = prescribed.get(path.name, (reference.optim.optimizer, reference.optim.base_lr))
        assert (config.optim.optimizer, config.optim.base_lr) == optimizer, path.name
        unchanged = ("momentum", "weight_decay", "warmup_epochs", "probe_lr")
        assert all(getattr(config.optim, k) == getattr(reference.optim, k) for k in unchanged), path.name
    paper = load_config(CONFIGS / "fashion-mnist" / "matrix_ssl_paper.yaml").loss
    assert (paper.target_scale, paper.trace_term, paper.taylor_order) == (None, True, None)


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "loss.method=simclr loss.simclr.temperature=0",
            "'loss.simclr.temperature': temperature must be > 0",
        ),
        ("loss.method=mec loss.mec.eps_squared=-1", "'loss.mec.eps_squared': eps_squared must be > 0"),
        (
            "loss.method=mec loss.mec.lambda_warmup_epochs=-1",
            "'loss.mec.lambda_warmup_epochs': .* must be >= 0",
        ),
        (
            "loss.method=vicreg loss.vicreg.variance_weight=-2",
            "'loss.vicreg.variance_weight': .* must be >= 0",
        ),
        ("loss.method=tcr loss.tcr.invariance_weight=-1", "'loss.tcr.invariance_weight': .* must be >= 0"),
        ("loss.online_uniformity=-1", "'loss.online_uniformity': online_uniformity must be >= 0"),
        ("loss.gamma=-1", "'loss.gamma': gamma must be >= 0"),
    ],
)
def test_bad_method_hyperparameters_name_their_key(override: str, message: str) -> None:
    """Each range is checked once, by the loss or method that takes the value; the error names the key."""
    config = load_config(None, [*TINY, *override.split()])
    with pytest.raises(MatrixSSLError, match=message):
        build_method(config, info=INFO, steps_per_epoch=10)


def test_unknown_keys_and_methods_are_refused() -> None:
    with pytest.raises(MatrixSSLError, match="unknown config key 'loss.tcr.nope'"):
        load_config(None, ["loss.tcr.nope=1"])
    with pytest.raises(MatrixSSLError, match="unknown method 'nope'"):
        check_method(load_config(None, ["loss.method=nope"]))


def test_local_views_only_for_methods_whose_loss_takes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(None, []).data.local_views == 0  # every method runs from the defaults
    check_method(load_config(None, ["data.local_views=2", "loss.method=simclr"]))

    class TwoViewsOnly(METHODS["simclr"]):  # type: ignore[valid-type, misc]
        supports_local_views = False

    monkeypatch.setitem(METHODS, "two_views_only", TwoViewsOnly)
    with pytest.raises(
        MatrixSSLError, match="data.local_views .multi-crop. is implemented for .*, not two_views_only"
    ):
        check_method(load_config(None, ["data.local_views=2", "loss.method=two_views_only"]))


def test_a_method_must_declare_whether_it_uses_a_teacher() -> None:
    class Forgetful(SSLMethod):
        pass

    with pytest.raises(TypeError, match="Forgetful must declare the class attribute uses_teacher"):
        Forgetful(load_config(None, TINY), info=INFO, steps_per_epoch=1)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_parameter_groups_have_names_learning_rates_and_weight_decay(method: str) -> None:
    model = build(method, "optim.base_lr=0.4", "optim.probe_lr=0.05", "optim.weight_decay=3e-4")
    optimizer = model.configure_optimizers()["optimizer"]
    lr = 0.4 * 16 / 256  # base_lr x batch / 256
    groups = {g["name"]: (g["lr"] * 1.0, g["weight_decay"]) for g in optimizer.param_groups}
    # the scheduler has applied the first warm-up factor to every group alike
    factor = groups["probe"][0] / 0.05
    assert groups == {
        "trained": (pytest.approx(lr * factor), 3e-4),
        "trained/no_decay": (pytest.approx(lr * factor), 0.0),
        "probe": (pytest.approx(0.05 * factor), 0.0),
    }
    dims = {g["name"]: {p.ndim for p in g["params"]} for g in optimizer.param_groups}
    assert dims["trained"] == {2, 4} or dims["trained"] == {2}, dims  # linear and conv weights
    assert dims["trained/no_decay"] == {1}  # biases and normalisation parameters
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    teacher = {id(p) for p in model.teacher.parameters()} if model.teacher is not None else set()
    assert trained == {id(p) for p in model.parameters()} - teacher


def build(method: str, *overrides: str) -> torch.nn.Module:
    config = load_config(None, [*TINY, f"loss.method={method}", *overrides])
    return METHODS[method](config, info=INFO, steps_per_epoch=10)


def test_teachers_and_heads_per_method() -> None:
    with_teacher = {name for name in METHODS if build(name).teacher is not None}
    assert with_teacher == {"matrix_ssl", "byol", "mec"}
    with_predictor = {name for name in METHODS if hasattr(build(name), "predictor")}
    assert with_predictor == {"matrix_ssl", "byol", "simsiam", "mec"}
    # VICReg's expander ends in a Linear layer: its variance term needs the raw scale.
    assert isinstance(build("vicreg").projector.layers[-1], torch.nn.Linear)
    assert isinstance(build("barlow_twins").projector.layers[-1], torch.nn.BatchNorm1d)


def test_a_teacher_with_momentum_zero_is_the_detached_student() -> None:
    torch.manual_seed(0)
    config = load_config(None, [*TINY, "teacher.base_momentum=0.5", "teacher.final_momentum=0.5"])
    explicit = METHODS["matrix_ssl"](config, info=INFO, steps_per_epoch=10)
    shortcut = build("matrix_ssl", "teacher.base_momentum=0", "teacher.final_momentum=0")
    assert shortcut.teacher is None and not any(k.startswith("teacher.") for k in shortcut.state_dict())
    student = torch.nn.Sequential(explicit.backbone, explicit.projector)
    with torch.no_grad():  # the student moves; an update with momentum 0 makes the EMA teacher a copy again
        for p in student.parameters():
            p.add_(0.1 * torch.randn_like(p))
    explicit.teacher.update(student, 0.0)
    shortcut.load_state_dict({k: v for k, v in explicit.state_dict().items() if not k.startswith("teacher.")})
    views = [torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)]
    online = [shortcut.projector(shortcut.backbone(v)) for v in views]
    expected = explicit.teacher_outputs(views, [])
    got = shortcut.teacher_outputs(views, online)
    assert all(not g.requires_grad for g in got)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    no_teacher = build("simclr", "teacher.base_momentum=0", "teacher.final_momentum=0")
    assert no_teacher.teacher_outputs(views, online) == []  # methods without a teacher get no targets


def test_mec_lambda_warmup_schedule() -> None:
    assert lambda_scale(0, 100) == pytest.approx(1 / 8)
    assert lambda_scale(50, 100) == pytest.approx(1 / 4.5)
    assert lambda_scale(100, 100) == 1.0 and lambda_scale(250, 100) == 1.0 and lambda_scale(0, 0) == 1.0
    assert (
        build("mec", "loss.mec.lambda_warmup_epochs=10").lambda_warmup_steps == 10 * 10
    )  # loss.mec.lambda_warmup_epochs x steps per epoch


def test_tcr_method_loss_is_invariance_plus_coding_rate() -> None:
    method = build("tcr")
    config: Config = method.config
    z1, z2 = torch.randn(12, 16), torch.randn(12, 16)
    terms = method.loss_from_views([z1, z2], [])
    # Two unit vectors and their mean: cos(z_v, mean) = sqrt((1 + cos(z_1, z_2)) / 2).
    expected = -torch.sqrt((1 + F.cosine_similarity(z1, z2, dim=1)) / 2).mean()
    assert terms["invariance"].item() == pytest.approx(expected.item(), rel=1e-5)
    weight = config.loss.tcr.invariance_weight
    assert terms["loss"].item() == pytest.approx(
        (weight * terms["invariance"] - terms["coding_rate"]).item(), rel=1e-6
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_distributed_switch_reaches_the_loss(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build(method)
    model.setup("fit")
    assert model.loss_fn.gather_distributed is False
    monkeypatch.setattr("matrixssl.methods.base.world_size", lambda: 2)
    model.setup("fit")
    assert model.loss_fn.gather_distributed is True


def _embeddings(views: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(12, 16, generator=generator, dtype=torch.float64) for _ in range(views)]


@pytest.mark.parametrize("method", ["byol", "simsiam", "mec"])
def test_predicting_methods_take_local_views_as_extra_directions(method: str) -> None:
    """Two views: exactly the method's symmetric two-view loss. More: the mean over every (view, other global
    view's target) direction, each direction written out by hand."""
    model = build(method).double().eval()
    online, teacher = _embeddings(4), _embeddings(2, seed=1)
    p = [model.predictor(z) for z in online]
    targets = teacher if method != "simsiam" else online
    two = model.loss_from_views(online[:2], teacher)["loss"]
    kwargs = {"lambda_scale": lambda_scale(0, model.lambda_warmup_steps)} if method == "mec" else {}
    torch.testing.assert_close(two, model.loss_fn(p[0], p[1], targets[0], targets[1], **kwargs))

    def one_direction(v: int, t: int) -> torch.Tensor:
        if method == "mec":
            return model.loss_fn(p[v], p[v], targets[t], targets[t], **kwargs)
        cosine = F.cosine_similarity(p[v], targets[t], dim=1).mean()
        return 4 - 4 * cosine if method == "byol" else -cosine

    pairs = [(0, 1), (1, 0), (2, 0), (2, 1), (3, 0), (3, 1)]
    expected = torch.stack([one_direction(v, t) for v, t in pairs]).mean()
    torch.testing.assert_close(model.loss_from_views(online, teacher)["loss"], expected)


@pytest.mark.parametrize("method", ["simclr", "barlow_twins", "vicreg"])
def test_symmetric_methods_pair_each_local_view_with_each_global_view(method: str) -> None:
    model = build(method).double().eval()
    online = _embeddings(4)
    torch.testing.assert_close(
        model.loss_from_views(online[:2], [])["loss"], model.loss_fn(online[0], online[1])
    )
    pairs = [(0, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    expected = torch.stack([model.loss_fn(online[a], online[b]) for a, b in pairs]).mean()
    torch.testing.assert_close(model.loss_from_views(online, [])["loss"], expected)


def test_tcr_pulls_every_view_to_the_mean_of_all_views() -> None:
    model = build("tcr").double().eval()
    online = _embeddings(4)
    unit = [F.normalize(z, dim=1) for z in online]
    mean = sum(unit) / 4
    invariance = -sum(F.cosine_similarity(z, mean, dim=1).mean() for z in unit) / 4
    rate = sum(model.loss_fn(z) for z in online) / 4
    terms = model.loss_from_views(online, [])
    torch.testing.assert_close(terms["invariance"], invariance)
    torch.testing.assert_close(terms["loss"], model.invariance_weight * invariance + rate)


def test_every_method_takes_local_views() -> None:
    assert all(cls.supports_local_views for cls in METHODS.values())
