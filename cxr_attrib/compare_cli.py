"""``cxr-attrib compare``: several methods on one image, side by side (sheet, page, JSON, table)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import DataError
from .sanitise import terminal_text as plain

if TYPE_CHECKING:
    from .comparison import Comparison

__all__ = ["compare_command", "parse_truth", "print_comparison"]

console = Console()


def parse_truth(text: str | None) -> list[float] | None:
    """``"x1,y1,x2,y2"`` as four numbers (None for None).

    Raises:
        DataError: not four comma-separated numbers (names the value).
    """
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise DataError(f"--truth must be x1,y1,x2,y2 (four numbers in the image's pixels), got {text!r}")
    return values


def print_comparison(console: Console, comparison: Comparison, files: Sequence[Path]) -> None:
    """The terminal summary: a table ranked by IoU, the said-vs-used lines, the files written."""
    from .compare_page import METRICS

    console.print(Text.assemble("question: ", plain(comparison.question)), soft_wrap=True)
    console.print(Text.assemble(plain(f"model {comparison.model} answered "), plain(comparison.answer.strip(), "bold")),
                  soft_wrap=True)
    errors = any(panel.error for panel in comparison.panels)
    table = Table("rank", "method", *(label for _, label in METRICS), "s", *(["error"] if errors else []),
                  title=plain("Methods ranked by IoU" if comparison.truth is not None else "Methods"))
    for rank, panel in enumerate(comparison.ranked(), 1):
        values = [panel.metric(name) for name, _ in METRICS]
        seconds = "-" if panel.result is None else f"{panel.result.meta.wall_time_s:.2f}"
        table.add_row(str(rank), plain(panel.method), *("-" if v is None else f"{v:.2f}" for v in values), seconds,
                      *([plain(panel.error or "")] if errors else []))
    console.print(table)
    for agreement in comparison.said_vs_used:
        console.print(Text.assemble("said vs used: ", plain(agreement.line())), soft_wrap=True)
    console.print(Text.assemble("wrote ", plain(", ".join(str(f) for f in files))), soft_wrap=True)


@click.command("compare")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--question", "-q", required=True, help="Base question, e.g. 'Is there evidence of nodule in the image?'.")
@click.option("--model", "-m", "model", required=True, help="Registry key, Hugging Face id or local folder.")
@click.option("--methods", default=None,
              help="Comma-separated method names. Default: medfocus and the strongest method of each family.")
@click.option("--truth", default=None, help="Ground-truth box x1,y1,x2,y2 in the image's own pixels (optional).")
@click.option("--answer", default=None, help="Answer to explain; generated greedily once when omitted.")
@click.option("--mode", type=click.Choice(["direct", "reasoning"]), default="direct", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-faithfulness", is_flag=True, help="Skip the deletion gain (saves the model passes it needs).")
@click.option("--device", default=None, help="e.g. cpu, cuda:0 (default: CUDA when available).")
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("cxr-attrib-compare"), show_default=True,
              help="Output folder: compare.png, index.html, result-<method>.json.")
def compare_command(image: Path, question: str, model: str, methods: str | None, truth: str | None,
                    answer: str | None, mode: str, seed: int, no_faithfulness: bool, device: str | None,
                    dtype: str, out: Path) -> None:
    """Compare what several methods say the model used to answer about IMAGE (PNG/JPEG/TIFF/DICOM)."""
    from .adapter import LoadOptions
    from .comparison import COMPARE_METHODS, check_out_dir, compare

    check_out_dir(out)
    names = COMPARE_METHODS if methods is None else methods.split(",")
    comparison = compare(model, image, question, names, truth=parse_truth(truth), answer=answer, mode=mode,
                         seed=seed, faithfulness=not no_faithfulness,
                         load_options=LoadOptions(dtype=dtype, device=device))
    print_comparison(console, comparison, comparison.save(out))
