"""Configuration: defaults, YAML, dotted overrides and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrixssl.config import Config, load_config, to_yaml
from matrixssl.errors import MatrixSSLError


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  batch_size: 64\nloss:\n  gamma: 0.5\n  taylor_order: null\n")
    config = load_config(
        path, ["trainer.max_epochs=3", "loss.gamma=2", "output_dir=/tmp/x", "data.subset=100"]
    )
    assert config.data.batch_size == 64
    assert config.loss.taylor_order is None
    assert config.loss.gamma == 2.0 and isinstance(config.loss.gamma, float)
    assert config.trainer.max_epochs == 3 and config.output_dir == "/tmp/x" and config.data.subset == 100


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    config = load_config(None, ["model.width=0.5", "loss.target_scale=null"])
    path = tmp_path / "round.yaml"
    path.write_text(to_yaml(config))
    assert load_config(path) == config
    assert Config() == load_config(None)


def test_exponent_without_a_dot_is_a_float() -> None:
    # YAML 1.1 reads 1e-4 as a string; users type it that way on the command line.
    config = load_config(None, ["optim.weight_decay=1e-4", "optim.base_lr=2E1"])
    assert config.optim.weight_decay == 1e-4 and config.optim.base_lr == 20.0


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.nme=x", "unknown config key 'data.nme'"),
        ("trainer.max_epochs=ten", "'trainer.max_epochs' must be int"),
        ("optim.base_lr=fast", "'optim.base_lr' must be float"),
        ("data.batch_size=-4", "'data.batch_size' must be positive"),
        ("data.batch_size=1", "at least 2"),
        ("data=3", "is a section"),
        ("max_epochs", "must look like key=value"),
        ("optim.optimizer=adam", "sgd or lars"),
        ("teacher.base_momentum=1.5", "momenta"),
        ("data.crop_min_scale=1.5", r"must be in \(0, 1\]"),
        ("trainer.precision=bf16", "'trainer.precision' must be one of auto, 32-true, bf16-mixed"),
        ("data.local_views=-2", "'data.local_views' must be >= 0"),
        ("data.local_crop_size=0", "'data.local_crop_size' must be positive"),
    ],
)
def test_bad_values_give_one_clear_error(override: str, message: str) -> None:
    with pytest.raises(MatrixSSLError, match=message):
        load_config(None, [override])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(MatrixSSLError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(MatrixSSLError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(MatrixSSLError, match="mapping"):
        load_config(listing)


def test_every_shipped_config_loads() -> None:
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*/*.yaml"))
    assert {p.parent.name for p in configs} >= {"fashion-mnist", "cifar10", "stl10", "imagenet"}
    for path in configs:
        load_config(path)


def test_quick_config_file_spells_out_the_defaults_plus_its_local_views() -> None:
    path = Path(__file__).resolve().parents[1] / "configs" / "fashion-mnist" / "matrix_ssl.yaml"
    quick = load_config(path)
    assert quick.data.local_views == 4 and Config().data.local_views == 0
    quick.data.local_views = 0
    assert quick == Config()


def test_shipped_configs_load_by_name_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the package's own copy is used
    by_name = load_config("cifar10/simclr")
    by_path = load_config("configs/cifar10/simclr.yaml")
    assert by_name == by_path and by_name.loss.method == "simclr" and by_name.data.name == "cifar10"
    assert load_config("fashion-mnist/matrix_ssl").data.local_views == 4
    with pytest.raises(MatrixSSLError, match="cannot read config file nope/simclr"):
        load_config("nope/simclr")
