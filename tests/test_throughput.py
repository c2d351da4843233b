"""benchmarks/throughput.py on tiny data: every ratio comes from the same steps, and the page has one row per
config and repeat and the parts of the last repeat."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import TINY, mnist_like, write_idx_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _report  # noqa: E402
import throughput  # noqa: E402


def test_the_page_pairs_each_lightning_step_with_a_by_hand_step_and_the_floors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    write_idx_split(data / "fashion-mnist", "train", *mnist_like(96, 0), gz=True)
    monkeypatch.setattr(_report, "RESULTS", tmp_path / "results")
    calls: list[str] = []
    for name in ("floor_work", "floor_with_heads_work"):
        work = getattr(throughput, name)
        monkeypatch.setattr(
            throughput, name, lambda *a, _work=work, _name=name: (calls.append(_name), _work(*a))[1]
        )
    argv = ["--steps=2", "--warmup=1", "--repeats=2", "--batch-size=16", f"data.dir={data}", *TINY]
    text = throughput.main(argv).read_text()
    # Lightning runs steps + warm-up + 1 steps per config and repeat; after each, one floor and one floor with
    # heads on the views of the by-hand step.
    assert calls == ["floor_work", "floor_with_heads_work"] * (4 * 2 * 2)
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| quick", "| two-view"))]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("| quick config (4 local views)", "1", "6"),
        ("| quick config (4 local views)", "2", "6"),
        ("| two-view config (data.local_views=0)", "1", "2"),
        ("| two-view config (data.local_views=0)", "2", "2"),
    ]
    for row in rows:
        images_s, step_ms, floor_ms = float(row[3]), float(row[4]), float(row[5])
        assert images_s == pytest.approx(16 / (step_ms / 1e3), rel=0.02, abs=1)
        assert floor_ms > 0 and all(float(cell.strip(" |*")) > 0 for cell in row[6:])
    parts = [line for line in text.splitlines() if line.startswith("| ") and " ms (" in line]
    assert [line.split(" | ")[0][2:] for line in parts] == list(throughput.PARTS)
    assert "precision 32-true" in text and "medians over 2 steps after 1 warm-up steps" in text
