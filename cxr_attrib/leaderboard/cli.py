"""``cxr-attrib leaderboard`` and ``cxr-attrib merge``.

Every check (names, options, the output folder, the stores already in it) runs
before any model is loaded. Heavy imports happen inside the commands, so the root
command stays fast.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from cxr_attrib.errors import DataError
from cxr_attrib.sanitise import for_terminal as escape
from cxr_attrib.sanitise import terminal_text
from cxr_attrib.variants import split_method_list

if TYPE_CHECKING:
    from cxr_attrib.adapter import LoadOptions

    from .config import RunConfig
    from .runner import Advance, ModelPlan, RunStats
    from .shard import Shard

__all__ = ["COMMANDS", "leaderboard_command", "merge_command"]

console = Console()
err_console = Console(stderr=True)


def _split_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def _fill(text: str) -> str | float:
    """``--fill``: a fill name, or a grey level written as a number."""
    try:
        return float(text)
    except ValueError:
        return text


def _check_out_folder(out: Path) -> None:
    """Create ``out`` if needed and prove it is writable (a real probe file, not only permissions)."""
    import tempfile

    from cxr_attrib.paths import ensure_outside_data

    ensure_outside_data(out, what="the leaderboard stores (--out)")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; expected a folder for the leaderboard stores")
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=out)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise DataError(f"--out {out} is not a writable folder ({exc.strerror}); choose a folder you can write to")\
            from None


def _check_folder_stores(out: Path, config: RunConfig, own: Path, resume: bool) -> None:
    """Refuse a folder that holds another run's store, or this shard's store without --resume."""
    from .store import open_store

    for path in sorted(out.glob("*.sqlite")):
        with open_store(path) as store:
            theirs = store.config()
            units = sum(store.counts().values())
        if theirs.digest != config.digest:
            raise DataError(
                f"--out {out} already holds a different leaderboard run ({path.name}: "
                f"{config.describe_difference(theirs)}); choose another --out folder (runs are never mixed)"
            )
        if path == own and not resume:
            raise DataError(
                f"{path} already holds {units} units of this run; pass --resume to continue it, "
                "or choose another --out folder"
            )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt (so a scheduler's stop is a clean stop)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("leaderboard")
@click.option("--benchmark", "-b", required=True, help="Registered benchmark: phantom, medground or a plugin's.")
@click.option("--split", default="direct", show_default=True, help="Benchmark split.")
@click.option("--mode", type=click.Choice(["direct", "reasoning"]), default=None,
              help="Prompt mode. Default: each sample's own mode.")
@click.option("--models", "-m", "models", required=True, help="Comma list of model keys, HF ids or folders.")
@click.option("--methods", default=None, help="Comma list of methods or variants NAME[key=value,...], e.g. "
              "'medfocus,medfocus[transfer=warp]'. Default: every registered method. Model-free priors and the "
              "reference rows are always included.")
@click.option("--param", "-p", "params", multiple=True, help="METHOD.PARAM=VALUE, e.g. occlusion.tiles=4 (repeatable).")
@click.option("--limit", type=int, default=None, help="At most N candidate samples per model.")
@click.option("--per-finding", type=int, default=None, help="The first N candidate samples of each finding.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the methods and the scorer.")
@click.option("--filter", "filter_", type=click.Choice(["auto", "exact", "inpaint", "none"]), default="auto",
              show_default=True, help="Causal filter: auto = the benchmark's exact counterfactuals when it has them.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True, help="Generation budget of answers.")
@click.option("--steps", type=int, default=10, show_default=True, help="Deletion/insertion steps of the scorer.")
@click.option("--n-random", type=int, default=8, show_default=True, help="Random regions of the scorer.")
@click.option("--fill", default="noisy_linear", show_default=True,
              help="How the scorer fills removed pixels: zero, mean, blur, noisy_linear or a grey level in [0, 1].")
@click.option("--recognition", type=int, default=0, show_default=True,
              help="Recognition pass: p(positive) of each model on the first N positives and N negatives of "
              "each finding (AUC, accuracy, F1 in the report's XBench section); 0 = none.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Folder of the store(s).")
@click.option("--shard", default=None, help="K/N with 0 <= K < N. Default: from RANK/WORLD_SIZE or Slurm, else 0/1.")
@click.option("--resume", is_flag=True, help="Continue the run stored in --out; finished units are skipped.")
@click.option("--device", default=None, help="e.g. cpu, cuda:0. Default: cuda:LOCAL_RANK when CUDA is there.")
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
def leaderboard_command(benchmark: str, split: str, mode: str | None, models: str, methods: str | None,
                        params: tuple[str, ...], limit: int | None, per_finding: int | None, seed: int, filter_: str,
                        max_new_tokens: int, steps: int, n_random: int, fill: str, recognition: int,
                        out: Path, shard: str | None, resume: bool, device: str | None, dtype: str) -> None:
    """Run every method on every model over a benchmark into a resumable SQLite store.

    One work unit per (sample, model, method, params, mode, seed); each shard writes
    OUT/shard-K-of-N.sqlite (OUT/leaderboard.sqlite unsharded). Combine shards with
    `cxr-attrib merge`.
    """
    from cxr_attrib.adapter import LoadOptions

    from cxr_attrib.safeio import exclusive_lock

    from .plan import build_config
    from .runner import plan_models
    from .shard import device_from_env, resolve_shard

    the_shard = resolve_shard(shard)
    config = build_config(
        benchmark=benchmark, split=split, models=_split_names(models) or [],
        methods_=None if methods is None else split_method_list(methods), params=params, mode=mode, seed=seed,
        limit=limit, per_finding=per_finding, filter_=filter_, max_new_tokens=max_new_tokens, steps=steps,
        n_random=n_random, fill=_fill(fill), recognition=recognition,
    )
    _check_out_folder(out)
    path = out / the_shard.filename
    with exclusive_lock(path, what=f"leaderboard store of shard {the_shard.label}"):  # a second process: refused
        _check_folder_stores(out, config, path, resume)
        plans = plan_models(config, the_shard)
        options = LoadOptions(dtype=dtype, device=device or device_from_env())
        _run_locked(path, config, the_shard, plans, options)


def _run_locked(path: Path, config: RunConfig, the_shard: Shard, plans: list[ModelPlan],
                options: LoadOptions) -> None:
    """Run one shard into its store while this process holds the store's lock."""
    from .runner import run_shard
    from .store import Store

    store = Store.open(path, writable=True) if path.exists() else Store.create(path, config, the_shard.label)
    err_console.print(terminal_text(
        f"shard {the_shard.label} ({the_shard.source}): {sum(p.units for p in plans)} units "
        f"over {len(config.models)} model(s) x {len(config.methods)} method(s) -> {path}"), highlight=False)
    try:
        with store, _sigterm_as_interrupt(), _progress(plans) as advance:
            stats = run_shard(config, store, the_shard, plans, options=options, advance=advance)
    except KeyboardInterrupt:
        with Store.open(path) as reader:
            counts = reader.counts()
        err_console.print(terminal_text(
            f"interrupted: {counts['ok'] + counts['error']} units are safely stored in {path}; "
            "rerun the same command with --resume to finish"), highlight=False)
        raise SystemExit(130) from None
    _print_summary(path, stats)


@contextmanager
def _progress(plans: list[ModelPlan]) -> Iterator[Advance]:
    """Rich progress bars with ETA: one overall, one per model."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err_console) as progress:
        overall = progress.add_task("all models", total=sum(p.units for p in plans))
        tasks = {p.model: progress.add_task(escape(p.model), total=p.units) for p in plans}

        def advance(model: str, n: int) -> None:
            if n:
                progress.advance(tasks[model], n)
                progress.advance(overall, n)

        yield advance


def _print_summary(path: Path, stats: RunStats) -> None:
    from .store import open_store

    table = Table("model", "method", "ok", "failed", title=f"Leaderboard store {escape(str(path))}")
    with open_store(path) as store:
        counts: dict[tuple[str, str], list[int]] = {}
        for unit in store.units(heatmaps=False):
            counts.setdefault((unit.model, unit.method), [0, 0])[0 if unit.ok else 1] += 1
        loads = store.model_loads()
    for (model, method), (ok, failed) in sorted(counts.items()):
        table.add_row(escape(model), escape(method), str(ok), str(failed))
    console.print(table)
    per_unit = stats.write_s / stats.done * 1000 if stats.done else 0.0
    console.print(terminal_text(
        f"this process: {stats.done} units run ({stats.failed} failed), {stats.skipped} already stored, "
        f"{stats.filtered_out} dropped by the causal filter; {len(stats.loads)} model load(s); "
        f"store writes {per_unit:.1f} ms per unit; {len(loads)} model load(s) recorded in the store"),
        highlight=False)


@click.command("merge")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def merge_command(out: Path, shards: tuple[Path, ...]) -> None:
    """Merge the shard stores SHARDS of one run into the new store OUT.

    Duplicate units are kept once; units with conflicting results are reported (the
    first shard's row is kept) and the exit status is 2.
    """
    from .merge import merge_stores

    stats = merge_stores(out, shards)
    console.print(terminal_text(f"merged {len(shards)} store(s) into {out}: {stats.units} units, "
                  f"{stats.duplicates} duplicate(s) removed, {len(stats.conflicts)} conflict(s)"), highlight=False)
    if stats.conflicts:
        table = Table("unit", "kept from", "differs in", "other", title="Conflicting results (first kept)")
        for c in stats.conflicts:
            table.add_row(c.unit_id[:12], escape(c.kept), escape(", ".join(c.fields)), escape(c.other))
        err_console.print(table)
        raise SystemExit(2)


@click.command("said-vs-used")
@click.argument("store", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--said", default="prompting", show_default=True,
              help="Method whose first box is the region the model states.")
@click.option("--used", default="medfocus,occlusion", show_default=True,
              help="Comma list of methods whose boxes are the regions the answer depends on.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the markdown table here (default: print it).")
def said_vs_used_command(store: Path, said: str, used: str, out: Path | None) -> None:
    """Compare the box a model states with the regions that drive its answer, from a leaderboard STORE.

    Per model and finding, over the samples answered "yes" with every named method ok:
    the IoU of the said box with each used region and with the ground truth, mean and
    95% bootstrap interval in percent (docs/phantom-methods.md, "Said vs used").
    """
    from cxr_attrib.outputs import check_outputs, write_files

    from .agreement import agreement_from_store, agreement_markdown

    if out is not None:
        check_outputs([out], inputs=[store])  # before any work
    rows = agreement_from_store(store, said=said, used=_split_names(used) or [])
    text = agreement_markdown(rows) + "\n"
    if out is None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)
    else:
        write_files({out: text.encode("utf-8")})
        console.print(terminal_text(f"wrote {out}"), highlight=False)


COMMANDS = (leaderboard_command, merge_command, said_vs_used_command)
"""The commands this module adds to the root ``cxr-attrib`` group."""
