"""The ``cxr-attrib`` command line (click + rich).

Errors the toolkit raises on purpose (:class:`~cxr_attrib.errors.CxrAttribError`)
are printed as one line, without a traceback, and exit with status 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import CxrAttribError
from .pool_cli import pool

console = Console()
err_console = Console(stderr=True)


class _Group(click.Group):
    """A click group that turns toolkit errors into one clean line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CxrAttribError as exc:
            err_console.print(f"[bold red]Error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="cxr-attrib")
def cli() -> None:
    """Which part of a chest X-ray did a vision-language model use for its answer?"""


@cli.command()
def methods() -> None:
    """List the registered attribution methods."""
    from .registry import methods as registered

    table = Table("method", "output", "needs", "defaults", "summary", title="Attribution methods")
    for name, cls in registered().items():
        needs = [flag for flag, on in (("gradients", cls.needs_gradients), ("attentions", cls.needs_attentions),
                                       ("model", cls.uses_model)) if on]
        defaults = ", ".join(f"{k}={v!r}" for k, v in cls.defaults.items())
        table.add_row(name, cls.output, ", ".join(needs) or "-", defaults or "-", cls.summary)
    console.print(table)


@cli.command()
def models() -> None:
    """List the registered model keys (any HF id or local folder also works)."""
    from .registry import model_cards

    table = Table("key", "family", "source", "summary", title="Models")
    for key, card in model_cards().items():
        table.add_row(key, card.family, card.source, card.summary)
    console.print(table)


@cli.command()
def plugins() -> None:
    """List every plugin, its version, what it registered and any error."""
    from .registry import plugin_report

    table = Table("plugin", "distribution", "version", "registered", "status", title="Plugins")
    failed = False
    for info in plugin_report():
        registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in info.registered.items() if names)
        status = "[green]ok[/]" if not info.errors else "[red]" + " | ".join(e.reason for e in info.errors) + "[/]"
        failed = failed or bool(info.errors)
        table.add_row(info.name, info.distribution or "-", info.version or "-", registered or "-", status)
    console.print(table)
    if failed:
        err_console.print("Some plugins failed to load; the others work. See the status column.")


def _parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` where value is a JSON literal (number, bool, list...) or a plain string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint="--param")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


@cli.command("attribute")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--question", "-q", required=True, help="Base question, e.g. 'Is there evidence of nodule in the image?'.")
@click.option("--model", "-m", "model", required=True, help="Registry key, Hugging Face id or local folder.")
@click.option("--method", default=None, help="Method name (see `cxr-attrib methods`). Default: the toolkit's default method.")
@click.option("--mode", type=click.Choice(["direct", "reasoning"]), default="direct", show_default=True)
@click.option("--target", type=click.Choice(["answer", "response", "turn"]), default="answer", show_default=True,
              help="Which tokens are explained.")
@click.option("--answer", default=None, help="Response to explain; generated greedily when omitted.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--param", "-p", "params", multiple=True, help="Method hyper-parameter KEY=VALUE (repeatable).")
@click.option("--device", default=None, help="e.g. cpu, cuda:0 (default: CUDA when available).")
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("attribution.png"),
              show_default=True, help="Overlay PNG; the JSON result is written next to it (.json).")
def attribute_command(image: Path, question: str, model: str, method: str, mode: str, target: str,
                      answer: str | None, seed: int, params: tuple[str, ...], device: str | None, dtype: str,
                      out: Path) -> None:
    """Attribute a model's answer about IMAGE (PNG/JPEG/TIFF/DICOM) and write overlay + JSON."""
    from .adapter import LoadOptions
    from .api import DEFAULT_METHOD, attribute

    method = method or DEFAULT_METHOD
    parsed = dict(_parse_param(p) for p in params)
    result = attribute(model, image, question, method=method, mode=mode, target=target, answer=answer,
                       seed=seed, load_options=LoadOptions(dtype=dtype, device=device), **parsed)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out)
    json_path = out.with_suffix(".json")
    result.save(json_path)
    console.print(f"answer: [bold]{result.answer.strip()}[/]  method: {result.meta.method}  "
                  f"time: {result.meta.wall_time_s:.2f} s  passes: {dict(result.meta.passes)}")
    if result.boxes:
        console.print("boxes (input pixels, x1 y1 x2 y2): " + "; ".join(
            " ".join(f"{v:.0f}" for v in box) for box in result.boxes[:5]))
    console.print(f"wrote {out} and {json_path}")



@cli.command("filter")
@click.option("--model", "-m", "model", required=True, help="Registry key, Hugging Face id or local folder.")
@click.option("--benchmark", "-b", "benchmark", required=True, help="Registered benchmark whose items are filtered.")
@click.option("--split", default="direct", show_default=True, help="Benchmark split to read the items from.")
@click.option("--counterfactuals", "counterfactuals", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of pre-computed edits: <dir>/<dataset>/<index>_edited[_kept[_normal]].png.")
@click.option("--inpaint", is_flag=True, help="Use the approximate in-painting fallback instead of a folder.")
@click.option("--mode", type=click.Choice(["direct", "reasoning"]), default="direct", show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Records JSON to write (MedGround-Bench schema plus kept/approximate).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Filter at most N items.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True,
              help="Generation budget per answer.")
@click.option("--device", default=None, help="e.g. cpu, cuda:0 (default: CUDA when available).")
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
def filter_command(model: str, benchmark: str, split: str, counterfactuals: Path | None, inpaint: bool, mode: str,
                   out: Path, limit: int | None, max_new_tokens: int, device: str | None, dtype: str) -> None:
    """Keep the benchmark items whose box causally drives MODEL's answer (yes / no / yes / yes).

    Each distinct (dataset, index) item of the split is asked once on the original and on
    its three counterfactuals; every item gets a record, with kept=true for survivors.
    """
    from collections import Counter
    from itertools import islice

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .adapter import LoadOptions
    from .filtering import FolderProvider, InpaintProvider, causal_filter, write_records
    from .models import load_adapter
    from .registry import get_benchmark

    if (counterfactuals is None) == (not inpaint):
        raise click.UsageError("pass exactly one of --counterfactuals DIR and --inpaint")
    provider = InpaintProvider() if inpaint else FolderProvider(counterfactuals)
    seen: set[tuple[str, int]] = set()
    items = []
    for sample in get_benchmark(benchmark).samples(split=split):
        if (sample.dataset, sample.index) not in seen:
            seen.add((sample.dataset, sample.index))
            items.append(sample)
    items = list(islice(items, limit))
    adapter = load_adapter(model, LoadOptions(dtype=dtype, device=device))
    records = []
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(f"filtering {benchmark}/{split} with {model}", total=len(items))
        for record in causal_filter(adapter, items, provider, mode=mode, model=model,
                                    max_new_tokens=max_new_tokens):
            records.append(record)
            progress.advance(task)
    write_records(records, out, protected=[counterfactuals] if counterfactuals is not None else [])
    totals = Counter((r.dataset, r.finding) for r in records)
    kept = Counter((r.dataset, r.finding) for r in records if r.kept)
    table = Table("dataset", "finding", "kept", "items", title=f"Causal filter: {model}")
    for dataset, finding in sorted(totals):
        table.add_row(dataset, finding, str(kept[dataset, finding]), str(totals[dataset, finding]))
    console.print(table)
    flag = " (approximate counterfactuals)" if any(r.approximate for r in records) else ""
    console.print(f"kept {sum(kept.values())} of {len(records)} items{flag}; wrote {out}")

cli.add_command(pool)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cxr-attrib`` console script."""
    from .registry import add_plugin_commands

    add_plugin_commands(cli)
    cli.main(args=argv, prog_name="cxr-attrib")
