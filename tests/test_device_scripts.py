"""The device scripts (scripts/gpu_*.sh) parse, and each installs its wheels through the one
shared helper, into a site directory of its own that it empties first."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("gpu_*.sh"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed here")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_device_script_parses_and_uses_its_own_site(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text(encoding="utf-8")
    assert "source scripts/device_site.sh" in text
    calls = re.findall(r"^device_site (\S+)", text, flags=re.M)
    assert calls == [script.stem.removeprefix("gpu_")], calls  # one call, its own name


def test_the_sites_are_distinct() -> None:
    names = [re.findall(r"^device_site (\S+)", p.read_text(), flags=re.M)[0] for p in SCRIPTS]
    assert len(SCRIPTS) >= 4 and len(set(names)) == len(names)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed here")
def test_device_site_empties_the_site_and_sets_the_path(tmp_path: Path) -> None:
    """With no wheels carried it installs nothing, yet still empties the old site first."""
    helper = Path(__file__).resolve().parents[1] / "scripts" / "device_site.sh"
    site = Path("/tmp/site-lace-test-empty")
    site.mkdir(exist_ok=True)
    (site / "stale.py").write_text("")
    out = subprocess.run(
        ["bash", "-c", f"set -u; source {helper}; device_site lace-test-empty nothing_here; "
         'echo "PATH=$PYTHONPATH"'],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert not site.exists() or not (site / "stale.py").exists()
    assert f"PATH={site}:{tmp_path}" in out
