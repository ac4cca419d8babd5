"""A separate package, written from CONTRIBUTING.md, installed with pip.

The package in ``tests/example_plugin/`` is the tutorial's code (a meta-test checks
CONTRIBUTING.md shows exactly these files). It is pip-installed into a target folder
that is put on ``PYTHONPATH`` of ``cxr-attrib`` subprocesses, beside a second package
whose module raises on import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent / "example_plugin"


def _pip_install(src: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        check=True, capture_output=True, text=True,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder with the example plugin and a broken plugin installed by pip."""
    root = tmp_path_factory.mktemp("plugins")
    target = root / "site"
    example = root / "example"
    shutil.copytree(EXAMPLE, example)
    _pip_install(example, target)
    broken = root / "broken"
    broken.mkdir()
    (broken / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "cxr-attrib-broken"
        version = "9.9"
        [project.entry-points.cxr_attrib]
        broken = "cxr_attrib_broken"
    """))
    (broken / "cxr_attrib_broken.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    _pip_install(broken, target)
    return target


def _cli(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CXR_ATTRIB_")}
    environ.update(env, PYTHONPATH=str(site), COLUMNS="200")
    exe = Path(sys.executable).with_name("cxr-attrib")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=environ, timeout=120)


def test_installed_plugin_method_is_listed(site):
    out = _cli(site, "methods")
    assert out.returncode == 0, out.stderr
    assert "brightness" in out.stdout and "occlusion" in out.stdout


def test_plugin_that_raises_on_import_is_reported_and_others_work(site):
    out = _cli(site, "plugins")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if "broken" in l)
    assert "cxr-attrib-broken" in line and "9.9" in line
    assert "brightness" in out.stdout and "occlusion" in out.stdout
    listed = {row["plugin"]: row for row in json.loads(_cli(site, "plugins", "--json").stdout)}
    assert any("this plugin is broken on purpose" in e for e in listed["broken"]["errors"])
    assert listed["occlusion"]["registered"] == {"methods": ["occlusion"]} and not listed["occlusion"]["errors"]


def test_block_plugins_hides_a_plugin(site):
    out = _cli(site, "methods", CXR_ATTRIB_BLOCK_PLUGINS="brightness")
    assert "brightness" not in out.stdout and "occlusion" in out.stdout
    by_dist = _cli(site, "methods", CXR_ATTRIB_BLOCK_PLUGINS="cxr-attrib-brightness")
    assert "brightness" not in by_dist.stdout


def test_load_plugins_allow_list(site):
    only = _cli(site, "methods", CXR_ATTRIB_LOAD_PLUGINS="brightness")
    assert "brightness" in only.stdout and "occlusion" not in only.stdout
    none = _cli(site, "plugins", CXR_ATTRIB_LOAD_PLUGINS="")
    assert "priors" not in none.stdout and "brightness" not in none.stdout


def test_installed_plugin_attributes_through_the_api(site, tmp_path):
    image = tmp_path / "img.png"
    from PIL import Image
    import numpy as np

    Image.fromarray(np.tile(np.arange(0, 250, 5, dtype=np.uint8), (30, 1))).save(image)
    out = _cli(site, "attribute", str(image), "-q", "Is there evidence of nodule in the image?", "-m", "none",
               "--method", "brightness", "--answer", "Yes", "-p", "threshold=0.8", "--out", str(tmp_path / "o.png"))
    assert out.returncode == 0, out.stderr
    from cxr_attrib import Attribution

    result = Attribution.load(tmp_path / "o.json")
    assert result.heatmap.shape == (30, 50)
    assert result.meta.params == {"threshold": 0.8}
    # Columns brighter than 0.8 * 255 get heat, darker ones none.
    assert result.heatmap[:, -1].min() > 0 and result.heatmap[:, :30].max() == 0
