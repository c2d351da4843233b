"""benchmarks/throughput.py: the ratios' arithmetic on made-up timestamps, and the page on tiny data, where every
Lightning step is followed by the by-hand step and both floors on the same batch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import TINY, mnist_like, write_idx_split

from matrixssl.config import load_config
from matrixssl.train import training_precision

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _report  # noqa: E402
import throughput  # noqa: E402


def test_each_ratio_is_the_median_of_per_step_ratios_after_the_warm_up() -> None:
    timer = throughput.PairedTimer("32-true")
    # Four Lightning steps (the first is warm-up); a step is the interval to the next start less what was
    # inserted after it, so the last step, with no next start, is dropped: steps 25-10-5 = 10 and 45-25-6 = 14.
    timer.starts = [0.0, 10.0, 25.0, 45.0]
    timer.inserted = [4.0, 5.0, 6.0, 7.0]
    timer.floors = [9.0, 2.0, 3.0, 8.0]
    timer.heads = [9.0, 2.2, 3.3, 8.0]
    timer.parts = [dict.fromkeys(throughput.PARTS, value) for value in (9.0, 1.0, 2.0, 9.0)]  # sums 6, 12
    summary = timer.summary(warmup=1)
    assert summary["step"] == pytest.approx(12.0) and summary["floor"] == pytest.approx(2.5)
    assert summary["ratio"] == pytest.approx((10 / 2 + 14 / 3) / 2)
    assert summary["by_hand_ratio"] == pytest.approx((6 / 2 + 12 / 3) / 2)
    assert summary["lightning_ratio"] == pytest.approx((10 / 6 + 14 / 12) / 2)
    assert summary["heads_ratio"] == pytest.approx(1.1)
    assert summary["parts"] == pytest.approx(dict.fromkeys(throughput.PARTS, 1.5))


def test_the_page_pairs_each_lightning_step_with_a_by_hand_step_and_the_floors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    write_idx_split(data / "fashion-mnist", "train", *mnist_like(96, 0), gz=True)
    monkeypatch.setattr(_report, "RESULTS", tmp_path / "results")
    calls: list[tuple[str, int]] = []
    for name in ("floor_work", "floor_with_heads_work"):
        work = getattr(throughput, name)

        def record(*args, _work=work, _name=name):  # type: ignore[no-untyped-def]
            calls.append((_name, len(args[1])))  # the views of the by-hand step
            return _work(*args)

        monkeypatch.setattr(throughput, name, record)
    argv = ["--steps=2", "--warmup=1", "--repeats=2", "--batch-size=16", f"data.dir={data}", *TINY]
    text = throughput.main(argv).read_text()
    # Lightning runs steps + warm-up + 1 steps per config and repeat; after each, one floor and one floor with
    # heads on the by-hand step's views: six with the quick config's four local views, two without.
    per_fit = 2 + 1 + 1
    quick = [("floor_work", 6), ("floor_with_heads_work", 6)] * per_fit
    two_view = [("floor_work", 2), ("floor_with_heads_work", 2)] * per_fit
    assert calls == (quick + two_view) * 2
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| quick", "| two-view"))]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("| quick config (4 local views)", "1", "6"),
        ("| quick config (4 local views)", "2", "6"),
        ("| two-view config (data.local_views=0)", "1", "2"),
        ("| two-view config (data.local_views=0)", "2", "2"),
    ]
    for row in rows:
        images_s, step_ms, floor_ms = float(row[3]), float(row[4]), float(row[5])
        assert step_ms >= 1 and floor_ms >= 1
        # the page rounds the step to whole milliseconds and images/s to whole images
        assert images_s == pytest.approx(16e3 / step_ms, rel=0.6 / step_ms, abs=1)
        assert all(float(cell.strip(" |*")) > 0 for cell in row[6:])
    parts = [line for line in text.splitlines() if line.startswith("| ") and " ms (" in line]
    assert [line.split(" | ")[0][2:] for line in parts] == list(throughput.PARTS)
    precision = training_precision(load_config("fashion-mnist/matrix_ssl", []))
    assert f"precision {precision}" in text and "medians over 2 steps after 1 warm-up steps" in text


def test_bad_counts_are_refused_with_the_flag_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        throughput.main(["--steps=0"])
    assert exit_info.value.code == 2 and "--steps must be at least 1, got 0" in capsys.readouterr().err
