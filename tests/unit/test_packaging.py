"""What the services install: no drawing library; drawing is the CLI's optional extra."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
BLOCK_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None; "


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True
    )


def test_matplotlib_is_an_extra_not_a_dependency() -> None:
    """The runtime dependencies name no matplotlib; the charts extra does."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("matplotlib")]
    assert [d for d in project["optional-dependencies"]["charts"] if d.startswith("matplotlib")]


def test_services_and_the_cli_start_without_matplotlib() -> None:
    """Every service's app and the CLI import with matplotlib absent."""
    modules = (
        "services.logging_svc.app",
        "services.prescriber.bootstrap",
        "services.channels.app",
        "services.cli.main",
        "services.replay.rebuild",
    )
    code = BLOCK_MATPLOTLIB + "; ".join(f"import {m}" for m in modules)
    result = _python(code)
    assert result.returncode == 0, result.stderr


def test_drawing_without_matplotlib_says_how_to_get_it() -> None:
    """Asking for a chart without the extra fails with the install command."""
    code = BLOCK_MATPLOTLIB + "import services.cli.charts"
    result = _python(code)
    assert result.returncode != 0
    assert "pip install 'backtrack[charts]'" in result.stderr
