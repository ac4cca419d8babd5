"""Meta-tests that keep the docs honest (in the spirit of datasette's)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cxr_attrib import registry

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(registry.plugin_manager().hook) if not name.startswith("_"))


def _spec_signature(name: str) -> str:
    caller = getattr(registry.plugin_manager().hook, name)
    return f"{name}({', '.join(caller.spec.argnames)})"


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_are_documented(hook):
    doc = (ROOT / "docs" / "plugin-hooks.md").read_text()
    assert f"## {_spec_signature(hook)}\n" in doc
    assert f'<a id="plugin_hook_{hook}"></a>' in doc


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_have_tests(hook):
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert re.search(rf"def test_hook_{hook}\b", tests), f"no test_hook_{hook} in tests/"


def _fenced_blocks(markdown: str, info: str) -> list[str]:
    return re.findall(rf"```{info}\n(.*?)```", markdown, flags=re.S)


@pytest.mark.parametrize("name, info", [("cxr_attrib_brightness.py", "python"), ("pyproject.toml", "toml")])
def test_contributing_tutorial_is_the_tested_example_plugin(name, info):
    """CONTRIBUTING.md shows, verbatim, the package tests/example_plugin installs and runs."""
    blocks = _fenced_blocks((ROOT / "CONTRIBUTING.md").read_text(), info)
    source = (ROOT / "tests" / "example_plugin" / name).read_text()
    assert source in blocks, f"CONTRIBUTING.md must show tests/example_plugin/{name} verbatim"


def test_every_registered_method_has_a_method_card():
    cards = ROOT / "docs" / "methods"
    missing = [n for n in registry.methods() if not (cards / f"{n}.md").is_file()]
    assert not missing, f"add docs/methods/<name>.md for {missing}"


def test_console_script_points_to_a_real_function():
    import importlib
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for target in project["scripts"].values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))
    for target in project["entry-points"]["cxr_attrib"].values():
        importlib.import_module(target)


def _readme_command(marker: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```bash\n(.*?)```\n<!-- /{marker} -->", readme, flags=re.S)
    assert block, f"README.md has no {marker} block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_gives_exactly_two_self_contained_commands():
    main, tests = _readme_command("main-command"), _readme_command("test-command")
    assert len(main) == 1 and len(tests) == 1
    for line in main + tests:
        assert line.startswith("python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && ")
    assert main[0].endswith("cxr-attrib demo") and "pytest" in tests[0]
    assert "<!-- test-command -->" in (ROOT / ".ci" / "run").read_text()
