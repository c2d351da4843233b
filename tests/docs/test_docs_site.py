"""The API reference site builds from the docstrings and the guides with no warning (`make docs` does the
same build), offline, and its pages hold what they should."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")
pytest.importorskip("material")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_every_page_is_built(site: Path) -> None:
    for page in ("index", "usage/index", "examples/index", "transfer/index", "api/functional/index",
                 "api/losses/index", "api/lm/index"):  # fmt: skip
        assert (site / f"{page}.html").is_file(), page


def test_api_pages_document_the_public_names(site: Path) -> None:
    functional = (site / "api/functional/index.html").read_text(encoding="utf-8")
    for name in ("matrix_log", "matrix_entropy", "matrix_kl", "matrix_cross_entropy", "effective_rank"):
        assert f'id="matrixssl.functional.{name}"' in functional, name
    assert "RankMe" in functional  # the effective-rank guidance is on the page
    loss_page = (site / "api/losses/index.html").read_text(encoding="utf-8")
    for name in ("MatrixSSLLoss", "MatrixSSLLoss.forward", "MatrixSSLLoss.paper", "MECLoss", "TCRLoss"):
        assert f'id="matrixssl.losses.{name}"' in loss_page, name
    assert 'id="matrixssl.lm.loss.MatrixCrossEntropyLMLoss"' in (site / "api/lm/index.html").read_text(
        "utf-8"
    )


def test_readme_is_the_home_page_with_working_images(site: Path) -> None:
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Matrix-SSL" in home and 'src="docs/' not in home
    for image in ("fashion-mnist-training.png", "benchmarks/results/fashion-mnist_curves.png"):
        assert f'src="{image}"' in home and (site / image).is_file(), image


def test_examples_page_shows_the_scripts(site: Path) -> None:
    page = (site / "examples/index.html").read_text(encoding="utf-8")
    assert "ema_update" in page and "compute_loss" in page


def test_pages_load_nothing_from_other_hosts(site: Path) -> None:
    """No web fonts, scripts or styles from elsewhere: the site works offline."""
    remote = re.compile(r"<(?:script|link|img)[^>]*(?:src|href)=\"(?:https?:)?//")
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not remote.search(text), page
        assert "fonts.googleapis" not in text, page
