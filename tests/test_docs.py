"""Meta-tests that keep the docs honest (in the spirit of datasette's)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import numpy as np
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


# -- every name the docs use exists; the cheap command lines run ---------------------------------

DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _doc_commands() -> list[tuple[str, list[str]]]:
    """``(file, argv after cxr-attrib)`` of every command line in a bash block or inline code."""
    import shlex

    found = []
    for path in DOCS:
        text = path.read_text()
        blocks = [block.replace("\\\n", " ") for block in _fenced_blocks(text, "bash")]
        lines = [line for block in blocks for line in block.splitlines()]
        lines += re.findall(r"`(cxr-attrib [^`]+)`", text)
        for line in lines:
            match = re.search(r"(?:^|\s|/)cxr-attrib\s+(.*)", line.split(" # ")[0].split("   #")[0])
            argv = shlex.split(match.group(1)) if match else []
            while argv and argv[0].startswith("-"):  # group options such as --debug
                found.append((path.name, ["--group-option", argv.pop(0)]))
            if argv and argv[0] != "...":
                found.append((path.name, argv))
    return found


def _cli_with_plugins():
    from cxr_attrib.cli import cli
    from cxr_attrib.registry import add_plugin_commands

    add_plugin_commands(cli)
    return cli


def _opts(argv: list[str], *names: str) -> list[str]:
    return [argv[i + 1] for i, token in enumerate(argv[:-1]) if token in names]


def _defined_in_docs() -> set[str]:
    """Method names the docs' own example plugins define (``name = "..."``)."""
    return {m for path in DOCS for m in re.findall(r'^\s+name = "([a-z_0-9]+)"', path.read_text(), flags=re.M)}


def test_docs_name_commands_and_options_that_exist():
    cli = _cli_with_plugins()
    commands = _doc_commands()
    assert len(commands) >= 10, commands
    group_options = {opt for param in cli.params for opt in param.opts}
    for source, argv in commands:
        if argv[0] == "--group-option":
            assert argv[1] in group_options, f"{source}: `cxr-attrib {argv[1]}` is not an option of cxr-attrib"
            continue
        command = cli.commands.get(argv[0])
        assert command is not None, f"{source}: `cxr-attrib {argv[0]}` is not a command"
        name, rest = argv[0], argv[1:]
        if isinstance(command, click.Group) and rest and not rest[0].startswith("-"):  # e.g. `pool build`
            sub = command.commands.get(rest[0])
            assert sub is not None, f"{source}: `cxr-attrib {name} {rest[0]}` is not a command"
            command, name, rest = sub, f"{name} {rest[0]}", rest[1:]
        valid = {opt for param in command.params for opt in param.opts + param.secondary_opts} | {"--help"}
        for token in rest:
            if re.fullmatch(r"--?[a-z][a-z-]*", token):
                assert token in valid, f"{source}: `cxr-attrib {name}` has no option {token}"


def test_docs_name_methods_and_models_that_are_registered():
    from cxr_attrib.api import DEFAULT_METHOD, NO_MODEL

    methods, models = set(registry.methods()), set(registry.model_cards()) | {NO_MODEL}
    assert DEFAULT_METHOD in methods
    named_methods, named_models = set(), set()
    for _, argv in _doc_commands():
        named_methods |= set(_opts(argv, "--method"))
        named_models |= set(_opts(argv, "--model", "-m"))
    for path in DOCS:
        text = path.read_text()
        named_methods |= set(re.findall(r'method="([^"]+)"', text))
        named_models |= set(re.findall(r'attribute\("([^"]+)"', text))
        named_models |= set(re.findall(r'`(phantom-[a-z]+)`', text))
    assert {"occlusion", "phantom-qwen", "qwen2_5_vl_3b"} <= named_methods | named_models
    assert named_methods - methods <= _defined_in_docs(), named_methods - methods
    assert not named_models - models, f"docs name unregistered models {named_models - models}"
    cards = {p.stem for p in (ROOT / "docs" / "methods").glob("*.md")}
    assert cards <= methods, f"method cards of unregistered methods: {cards - methods}"


def _runnable(argv: list[str]) -> bool:
    if argv[0] in ("methods", "models", "plugins"):
        return True
    models = _opts(argv, "--model", "-m")
    local = bool(models) and all(m.startswith("phantom-") for m in models)
    return argv[0] in ("attribute", "filter") and local and not _opts(argv, "--counterfactuals")


@pytest.mark.slow
def test_cheap_doc_command_lines_run(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from PIL import Image

    cli = _cli_with_plugins()
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((64, 48), 100, np.uint8)).save("cxr.png")
    ran = []
    for source, argv in _doc_commands():
        if not _runnable(argv):
            continue
        extra = ["--limit", "1"] if argv[0] == "filter" else []
        result = CliRunner().invoke(cli, argv + extra)
        assert result.exit_code == 0, f"{source}: cxr-attrib {' '.join(argv)} failed:\n{result.output}"
        ran.append(argv[0])
    assert {"methods", "models", "plugins", "filter"} <= set(ran), ran


def test_no_references_to_the_product_spec_or_issue_numbers():
    """The repository is its own reference: code and docs point to docs/, never elsewhere."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.toml"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    pattern = re.compile(r"\bSPEC\b(?! ?=)|\bissues? #?\d+|\bsee issue\b|phantom-suite issue")
    hits = [f"{name}:{n}" for name in tracked if name != "tests/test_docs.py"
            for n, line in enumerate((ROOT / name).read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_requires_python_covers_what_the_code_uses():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"  # tomllib (tests, tools) is 3.11+


def test_method_author_reference_shows_the_tested_examples():
    blocks = _fenced_blocks((ROOT / "CONTRIBUTING.md").read_text(), "python")
    assert (ROOT / "tests" / "example_methods.py").read_text() in blocks
    tests = (ROOT / "tests" / "test_method_author_examples.py").read_text()
    assert any(block in tests and "def test_gradient_example" in block for block in blocks)
    for call in ("score(", "encode(", "pixel_inputs(", "pixel_values(", "forward(", "to_working(", "attention(",
                 "relevance(", "generate("):
        assert f"`adapter.{call}" in (ROOT / "CONTRIBUTING.md").read_text(), call


def test_adapter_guide_members_table_is_generated_from_the_code():
    """docs/adapter-guide.md's required/optional members table equals capabilities.members_table()."""
    from cxr_attrib.capabilities import members_table

    guide = (ROOT / "docs" / "adapter-guide.md").read_text()
    table = re.search(r"<!-- members-table -->\n(.*?)<!-- /members-table -->", guide, flags=re.S)
    assert table is not None and table.group(1) == members_table(), (
        "regenerate the table: python -c 'from cxr_attrib.capabilities import members_table; "
        "print(members_table())'"
    )


def test_adapter_guide_is_linked_from_readme_and_contributing():
    for name in ("README.md", "CONTRIBUTING.md"):
        assert "docs/adapter-guide.md" in (ROOT / name).read_text(), name


def test_security_page_names_tests_that_exist():
    """docs/security.md lists each guarantee with the test that proves it: every named test exists."""
    text = (ROOT / "docs" / "security.md").read_text()
    named = 0
    for cell in re.findall(r"\| (`tests/[^|]+)\|\n", text):
        module = None
        for ref in re.findall(r"`([^`]+)`", cell):
            path, _, name = ref.partition("::")
            if path.startswith("tests/"):
                module = (ROOT / path).read_text()
            else:
                name = path
            assert module is not None and f"def {name}(" in module, ref
            named += 1
    assert named >= 40, named
