"""The ``cxr-attrib`` command line (click + rich).

Errors are printed as one ``Error:`` line, without a traceback, and exit with
status 1: those the toolkit raises on purpose
(:class:`~cxr_attrib.errors.CxrAttribError`) as they are, anything else as an
internal error. ``cxr-attrib --debug ...`` shows the full traceback instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .compare_cli import compare_command
from .errors import CxrAttribError
from .sanitise import for_terminal, terminal_text
from .leaderboard.report_command import report_command
from .pool_cli import pool

console = Console()
err_console = Console(stderr=True)

plain = terminal_text
"""Text a user, model or plugin wrote, shown literally (:func:`cxr_attrib.sanitise.terminal_text`)."""


def _error_line(exc: BaseException) -> Text:
    """``Error: <message>`` on one line for any error; works whatever the message holds.

    A toolkit error (:class:`CxrAttribError`) shows its message; anything else is an
    internal error and says how to see its traceback.
    """
    try:
        message = " ".join(str(exc).split())
    except Exception:  # a broken __str__ must not hide the error itself
        message = f"{type(exc).__name__} (its message cannot be shown)"
    if not isinstance(exc, CxrAttribError):
        message = f"internal error: {type(exc).__name__}: {message} (run `cxr-attrib --debug ...` for the traceback)"
    return Text.assemble(("Error:", "bold red"), " ", plain(message))


_DEBUG = "cxr_attrib.debug"


class _Group(click.Group):
    """A click group that turns every error into one clean line (``--debug``: the traceback).

    Plugin commands are added on first need (a command name the core does not know),
    so ``--help`` and the core commands start without importing any plugin (torch,
    transformers...); the help text says how to list them.
    """

    plugins_added = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self.plugins_added:
            self.add_plugins()
            command = super().get_command(ctx, cmd_name)
        return command

    def add_plugins(self) -> None:
        """Let every plugin add its sub-commands (once; a broken plugin setting is reported later)."""
        from .registry import add_plugin_commands

        self.plugins_added = True
        try:
            add_plugin_commands(self)
        except CxrAttribError:
            pass  # e.g. a bad CXR_ATTRIB_LOAD_PLUGINS: every command that needs plugins reports it

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if ctx.meta.get(_DEBUG):
                raise
            err_console.print(_error_line(exc), highlight=False, soft_wrap=True)
            ctx.exit(1)


@click.group(cls=_Group, epilog="Plugins add more commands (the phantom plugin adds `demo`); "
             "`cxr-attrib plugins` lists every plugin and `cxr-attrib NAME --help` describes a command.")
@click.version_option(__version__, prog_name="cxr-attrib")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of one line.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Which part of a chest X-ray did a vision-language model use for its answer?"""
    ctx.meta[_DEBUG] = debug


def _name_table(title: str, *columns: str) -> Table:
    """A table whose first column (the names) never wraps or truncates."""
    table = Table(title=title)
    table.add_column(columns[0], no_wrap=True, overflow="fold", min_width=max(len(columns[0]), 8))
    for column in columns[1:]:
        table.add_column(column, overflow="fold")
    return table


def _show(rows: list[dict[str, Any]], as_json: bool, table: Table) -> None:
    """Print ``rows`` as JSON (one list) or as ``table`` (one row per dict, in column order)."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        table.add_row(*(plain(_cell(value)) for value in row.values()))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_cell(v)}" for k, v in value.items() if v) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return "-" if value in (None, "") else str(value)


_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@cli.command()
@_JSON
def methods(as_json: bool) -> None:
    """List the registered attribution methods."""
    from .registry import methods as registered
    from .registry import registered_by

    rows = []
    for name, cls in registered().items():
        info = registered_by("methods", name)
        rows.append({
            "method": name, "output": cls.output,
            "needs": [flag for flag, on in (("gradients", cls.needs_gradients), ("attentions", cls.needs_attentions),
                                            ("model", cls.uses_model)) if on],
            "defaults": ", ".join(f"{k}={v!r}" for k, v in cls.defaults.items()),
            "plugin": info.name if info else None, "summary": cls.summary,
        })
    _show(rows, as_json, _name_table("Attribution methods", "method", "output", "needs", "defaults", "plugin",
                                     "summary"))


@cli.command()
@_JSON
def models(as_json: bool) -> None:
    """List the registered model keys (any HF id or local folder also works)."""
    from .registry import model_cards

    rows = [{"key": key, "family": card.family, "source": card.source, "licence": card.licence or "-",
             "summary": card.summary} for key, card in model_cards().items()]
    _show(rows, as_json, _name_table("Models", "key", "family", "source", "licence", "summary"))


@cli.command()
@_JSON
def plugins(as_json: bool) -> None:
    """List every plugin, its version, what it registered and any error."""
    from .registry import plugin_report

    rows = [{"plugin": info.name, "distribution": info.distribution, "version": info.version,
             "registered": {kind: names for kind, names in info.registered.items() if names},
             "errors": [e.reason for e in info.errors]} for info in plugin_report()]
    shown = rows if as_json else [{**row, "errors": " | ".join(row["errors"]) or "ok"} for row in rows]
    _show(shown, as_json, _name_table("Plugins", "plugin", "distribution", "version", "registered", "status"))
    if any(row["errors"] for row in rows):
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
@click.option("--model", "-m", "model", required=True,
              help="Registry key (see `cxr-attrib models`), Hugging Face id or local folder. `none` runs "
                   "without a model: only a model-free method (`cxr-attrib methods` shows no 'model' "
                   "in its needs) with --answer.")
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
@click.option("--no-clobber", is_flag=True, help="Refuse to replace an existing overlay or JSON (default: replace "
              "them atomically and say so).")
def attribute_command(image: Path, question: str, model: str, method: str, mode: str, target: str,
                      answer: str | None, seed: int, params: tuple[str, ...], device: str | None, dtype: str,
                      out: Path, no_clobber: bool) -> None:
    """Attribute a model's answer about IMAGE (PNG/JPEG/TIFF/DICOM) and write overlay + JSON."""
    from .adapter import LoadOptions
    from .api import DEFAULT_METHOD, attribute
    from .outputs import check_outputs

    method = method or DEFAULT_METHOD
    parsed = dict(_parse_param(p) for p in params)
    json_path = out.with_suffix(".json")
    check_outputs([out, json_path], inputs=[image], overwrite=not no_clobber)
    result = attribute(model, image, question, method=method, mode=mode, target=target, answer=answer,
                       seed=seed, load_options=LoadOptions(dtype=dtype, device=device), **parsed)
    replaced = result.save(out, json_path, overwrite=not no_clobber)
    lines = [Text.assemble("answer: ", plain(result.answer.strip(), "bold"), "  method: ", plain(result.meta.method),
                           f"  time: {result.meta.wall_time_s:.2f} s  passes: {dict(result.meta.passes)}")]
    if result.boxes:
        lines.append(Text("boxes (input pixels, x1 y1 x2 y2): " + "; ".join(
            " ".join(f"{v:.0f}" for v in box) for box in result.boxes[:5])))
    lines.append(Text.assemble("wrote ", plain(out), " and ", plain(json_path)))
    lines += [Text.assemble("replaced the existing ", plain(path)) for path in replaced]
    for line in lines:
        console.print(line, soft_wrap=True)


@cli.command("filter")
@click.option("--model", "-m", "model", required=True, help="Registry key, Hugging Face id or local folder.")
@click.option("--benchmark", "-b", "benchmark", required=True, help="Registered benchmark whose items are filtered.")
@click.option("--split", default="direct", show_default=True, help="Benchmark split to read the items from.")
@click.option("--counterfactuals", "counterfactuals", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of pre-computed edits: <dir>/<dataset>/<index>_edited[_kept[_normal]].png. "
                   "Default: the benchmark's own exact counterfactuals (e.g. phantom).")
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
    The edits come from --counterfactuals DIR, --inpaint, or else the benchmark itself.
    """
    from collections import Counter
    from itertools import islice

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .adapter import LoadOptions
    from .filtering import FolderProvider, InpaintProvider, causal_filter, check_records_path, write_records
    from .models import load_adapter
    from .registry import get_benchmark

    if counterfactuals is not None and inpaint:
        raise click.UsageError("pass at most one of --counterfactuals DIR and --inpaint")
    source = get_benchmark(benchmark)
    provider = InpaintProvider() if inpaint else FolderProvider(counterfactuals) if counterfactuals else None
    provider = provider or source.counterfactual_provider()
    if provider is None:
        raise click.UsageError(f"benchmark {benchmark!r} makes no counterfactuals of its own; "
                               "pass --counterfactuals DIR or --inpaint")
    protected = [counterfactuals] if counterfactuals is not None else []
    check_records_path(out, protected=protected)
    seen: set[tuple[str, int]] = set()
    items = []
    for sample in source.samples(split=split):
        if (sample.dataset, sample.index) not in seen:
            seen.add((sample.dataset, sample.index))
            items.append(sample)
    items = list(islice(items, limit))
    adapter = load_adapter(model, LoadOptions(dtype=dtype, device=device))
    records = []
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        description = for_terminal(f"filtering {benchmark}/{split} with {model}")
        task = progress.add_task(description, total=len(items))
        for record in causal_filter(adapter, items, provider, mode=mode, model=model,
                                    max_new_tokens=max_new_tokens):
            records.append(record)
            progress.advance(task)
    write_records(records, out, protected=protected)
    totals = Counter((r.dataset, r.finding) for r in records)
    kept = Counter((r.dataset, r.finding) for r in records if r.kept)
    table = Table("dataset", "finding", "kept", "items", title=plain(f"Causal filter: {model}"))
    for dataset, finding in sorted(totals):
        table.add_row(*map(plain, (dataset, finding, kept[dataset, finding], totals[dataset, finding])))
    console.print(table)
    flag = " (approximate counterfactuals)" if any(r.approximate for r in records) else ""
    console.print(plain(f"kept {sum(kept.values())} of {len(records)} items{flag}; wrote {out}"))


from .leaderboard.cli import COMMANDS as _LEADERBOARD_COMMANDS  # noqa: E402 (needs nothing from above)

for _command in (*_LEADERBOARD_COMMANDS, report_command, pool, compare_command):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cxr-attrib`` console script (plugin commands load on first need)."""
    cli.main(args=argv, prog_name="cxr-attrib")
