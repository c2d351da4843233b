"""The layers written in pyproject's import-linter contracts hold, and no module imports itself in a circle.

Both read every import statement, including those inside functions, so a lazy import cannot dodge a layer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout, result.stdout


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("matrixssl")
    cycles = {
        module: sorted(graph.find_upstream_modules(module) & graph.find_downstream_modules(module))
        for module in sorted(graph.modules)
    }
    assert {module: others for module, others in cycles.items() if others} == {}
