"""The ``cxr-attrib demo`` command, registered by the phantom plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cxr_attrib.cli import console
from cxr_attrib.compare_cli import print_comparison
from cxr_attrib.hookspecs import hookimpl

from .demo import DEMO_SEED, run_demo
from .findings import FINDINGS


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``cxr-attrib demo``: the main job on the embedded default."""

    @cli.command()
    @click.option("--model", "-m", default="phantom-qwen", show_default=True, help="Embedded model (or any model).")
    @click.option("--methods", default=None,
                  help="Comma-separated methods. Default: medfocus and the strongest method of each family.")
    @click.option("--finding", default="pleural_effusion", show_default=True,
                  type=click.Choice(FINDINGS))
    @click.option("--seed", type=int, default=None, help="Phantom seed >= 10000000 (default: a held-out effusion case).")
    @click.option("--out", "out", type=click.Path(path_type=Path), default=Path("cxr-attrib-demo"),
                  show_default=True, help="Output folder.")
    def demo(model: str, methods: str | None, finding: str, seed: int | None, out: Path) -> None:
        """Compare what several methods say an embedded model used, on a phantom X-ray with a known finding."""
        from cxr_attrib.comparison import COMPARE_METHODS

        names = COMPARE_METHODS if methods is None else methods.split(",")
        run = run_demo(out, model=model, methods=names, finding=finding, seed=DEMO_SEED if seed is None else seed)
        console.print(f"ground-truth box {tuple(round(v) for v in run.ground_truth)} (solid green in the panels)")
        print_comparison(console, run.comparison, run.files)
