"""The CLI starts without importing torch or any plugin; plugin commands load on first need."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from cxr_attrib.cli import cli

_HELP = """
import sys
from cxr_attrib.cli import main
try:
    main(["--help"])
except SystemExit as stop:
    assert stop.code == 0, stop.code
heavy = sorted(m for m in ("torch", "transformers", "captum", "ot", "scipy", "cxr_attrib_plugins") if m in sys.modules)
print("HEAVY", heavy)
"""


def test_help_imports_no_plugin_and_no_torch():
    out = subprocess.run([sys.executable, "-c", _HELP], capture_output=True, text=True, timeout=120, check=True).stdout
    out = " ".join(out.split())
    assert "Commands:" in out and "leaderboard" in out and "`cxr-attrib plugins` lists every plugin" in out
    assert "HEAVY []" in out, out


def test_a_plugin_command_loads_its_plugin_on_first_use():
    result = CliRunner().invoke(cli, ["demo", "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: cli demo" in result.output or "demo [OPTIONS]" in result.output


def test_an_unknown_command_is_still_a_clear_error():
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2 and "No such command 'no-such-command'" in result.output
