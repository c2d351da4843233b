"""Configuration: defaults, YAML, dotted overrides and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrixssl.config import Config, load_config, resolve_config, to_yaml
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


SHIPPED = Path(__file__).resolve().parents[1] / "configs"
METHODS = sorted(p.stem for p in (SHIPPED / "fashion-mnist").glob("*.yaml") if not p.stem.endswith("_paper"))


@pytest.mark.parametrize("dataset", sorted(p.name for p in SHIPPED.iterdir() if p.is_dir()))
def test_switching_the_method_by_override_gives_that_methods_shipped_config(dataset: str) -> None:
    # The method's own settings (optimiser, learning rate, loss section, output_dir, ...) come from its shipped
    # config, so they cannot drift from it: switching by override equals loading the method's file.
    for method in METHODS:
        assert load_config(f"{dataset}/matrix_ssl", [f"loss.method={method}"]) == load_config(
            f"{dataset}/{method}"
        ), method
        assert load_config(f"{dataset}/{method}", ["loss.method=matrix_ssl"]) == load_config(
            f"{dataset}/matrix_ssl"
        ), method


def test_switching_the_method_of_the_built_in_defaults() -> None:
    for method in set(METHODS) - {"matrix_ssl"}:  # the defaults are matrix_ssl.yaml with two views
        assert load_config(None, [f"loss.method={method}"]) == load_config(f"fashion-mnist/{method}"), method
    vicreg = load_config(None, ["loss.method=vicreg"])
    assert (vicreg.optim.optimizer, vicreg.optim.base_lr) == ("lars", 0.2)
    assert vicreg.output_dir == "runs/fashion-mnist-vicreg"
    simsiam = load_config(None, ["loss.method=simsiam"])
    assert (simsiam.optim.optimizer, simsiam.optim.base_lr) == ("sgd", 0.05)


def test_command_line_values_win_over_the_methods_own_in_any_order(tmp_path: Path) -> None:
    for overrides in (
        ["optim.base_lr=0.1", "loss.method=vicreg", "output_dir=/tmp/mine"],
        ["loss.method=vicreg", "optim.base_lr=0.1", "output_dir=/tmp/mine"],
    ):
        config, switch = resolve_config(None, overrides)
        assert (config.optim.optimizer, config.optim.base_lr, config.output_dir) == ("lars", 0.1, "/tmp/mine")
        assert switch is not None and switch.settings == {"optim.optimizer": "lars"}
        assert switch.source == SHIPPED.resolve() / "fashion-mnist" / "vicreg.yaml"
    # A file's own output_dir stays (it is the user's choice); its optimiser follows the method.
    path = tmp_path / "mine.yaml"
    path.write_text("output_dir: runs/mine\noptim:\n  base_lr: 0.5\n")
    config = load_config(path, ["loss.method=vicreg"])
    assert (config.output_dir, config.optim.optimizer, config.optim.base_lr) == ("runs/mine", "lars", 0.2)


def test_no_switch_no_change() -> None:
    assert resolve_config(None, ["loss.method=matrix_ssl"]) == (Config(), None)
    assert resolve_config(None, ["optim.base_lr=0.3"])[1] is None
    # An unknown method brings nothing here; `check_method` names the valid ones before a run starts.
    config, switch = resolve_config(None, ["loss.method=nope"])
    assert switch is None and config.optim == Config().optim and config.loss.method == "nope"


def test_devices_are_counts_or_lightning_spellings(tmp_path: Path) -> None:
    assert load_config(None, ["trainer.devices=3"]).trainer.devices == 3
    assert load_config(None, ["trainer.devices=-1"]).trainer.devices == -1
    assert load_config(None, ["trainer.devices=auto"]).trainer.devices == "auto"
    assert load_config(None, ["trainer.devices=0,1"]).trainer.devices == "0,1"
    path = tmp_path / "devices.yaml"
    path.write_text("trainer:\n  devices: '2'\n")
    assert load_config(path).trainer.devices == 2
    assert "devices: 3\n" in to_yaml(load_config(None, ["trainer.devices=3"]))
    for bad in ("0", "gpu", "[0, 1]", "-2"):
        with pytest.raises(MatrixSSLError, match="'trainer.devices' must be"):
            load_config(None, [f"trainer.devices={bad}"])


def test_logger_choices() -> None:
    assert Config().trainer.logger == "tensorboard"
    assert load_config(None, ["trainer.logger=wandb"]).trainer.logger == "wandb"
    with pytest.raises(MatrixSSLError, match="'trainer.logger' must be one of tensorboard, wandb, csv"):
        load_config(None, ["trainer.logger=mlflow"])


def test_the_switch_names_only_settings_the_new_method_reads() -> None:
    # cifar10's vicreg.yaml leaves Matrix-SSL's loss keys at their defaults: applied (the config equals the
    # file) but not announced, since VICReg does not read them.
    config, switch = resolve_config("cifar10/matrix_ssl", ["loss.method=vicreg"])
    assert config == load_config("cifar10/vicreg") and config.loss.ridge == Config().loss.ridge
    assert switch is not None and not [key for key in switch.settings if key.startswith("loss.")]
    assert switch.settings["optim.base_lr"] == 0.3
    _, back = resolve_config("cifar10/vicreg", ["loss.method=matrix_ssl"])
    assert back is not None and back.settings["loss.ridge"] == 1.0
