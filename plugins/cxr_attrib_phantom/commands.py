"""The ``cxr-attrib demo`` command, registered by the phantom plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rich.text import Text

from cxr_attrib.cli import console, plain
from cxr_attrib.hookspecs import hookimpl

from .demo import DEMO_SEED, run_demo
from .findings import FINDINGS


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``cxr-attrib demo``: the main job on the embedded default."""

    @cli.command()
    @click.option("--model", "-m", default="phantom-qwen", show_default=True, help="Embedded model (or any model).")
    @click.option("--method", default="occlusion", show_default=True, help="Attribution method.")
    @click.option("--finding", default="pleural_effusion", show_default=True,
                  type=click.Choice(FINDINGS))
    @click.option("--seed", type=int, default=None, help="Phantom seed >= 10000000 (default: a held-out effusion case).")
    @click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("cxr-attrib-demo"),
                  show_default=True, help="Output folder.")
    def demo(model: str, method: str, finding: str, seed: int | None, out: Path) -> None:
        """Attribute an embedded model's answer on a phantom X-ray with a known finding."""
        run = run_demo(out, model=model, method=method, finding=finding, seed=DEMO_SEED if seed is None else seed)
        result = run.result
        console.print(plain(f"question: {result.meta.question}"))
        console.print(Text.assemble(
            plain(f"model {result.meta.model} answered "), plain(result.answer.strip(), "bold"),
            plain(f"; method {result.meta.method} took {result.meta.wall_time_s:.2f} s, "
                  f"passes {dict(result.meta.passes)}")))
        console.print(f"ground-truth box {tuple(round(v) for v in run.ground_truth)}; "
                      f"IoU {run.iou:.2f}, pointing game "
                      + ("- (no heatmap)" if run.pointing_game is None else f"{run.pointing_game:.2f}"))
        console.print(plain(f"wrote {run.image_path}, {run.overlay_path}, {run.json_path}"))
