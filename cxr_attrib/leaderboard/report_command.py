"""``cxr-attrib report STORE...``: a leaderboard's ranked tables, files and HTML page."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from cxr_attrib.errors import DataError
from cxr_attrib.sanitise import terminal_text

__all__ = ["FORMATS", "TERMINAL_METRICS", "report_command"]

FORMATS = ("table", "markdown", "csv", "json", "html")
"""What ``--format`` accepts: the terminal table and the files of the report."""

TERMINAL_METRICS = ("iou", "pointing_game", "energy", "deletion_gain", "insertion_gain")
"""Metrics the terminal table shows after the ranking metric (up to 3, when present);
the files have every metric."""

def _names(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


@click.command("report")
@click.argument("stores", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=True, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Folder for report.md, report.csv, report.json and report.html.")
@click.option("--format", "formats", type=click.Choice(FORMATS), multiple=True,
              help="Output to make (repeatable). Default: all of them.")
@click.option("--rank-by", default="iou", show_default=True,
              help="Metric ranking the methods (macro mean over models).")
@click.option("--metrics", default=None,
              help="Comma list of metrics to summarise. Default: every report metric present.")
@click.option("--thumbnails", type=click.IntRange(min=0), default=4, show_default=True,
              help="Overlay thumbnails per method in the HTML page (0 = none).")
@click.option("--n-boot", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Bootstrap resamples per confidence interval.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Bootstrap seed.")
@click.option("--title", default="cxr-attrib leaderboard", show_default=True, help="HTML page title.")
def report_command(stores: tuple[Path, ...], out: Path, formats: tuple[str, ...], rank_by: str,
                   metrics: str | None, thumbnails: int, n_boot: int, seed: int, title: str) -> None:
    """Summarise leaderboard STORE files (or folders of shard stores) as ranked tables.

    Per model, split, method and dataset: sample counts, failures, means with
    bootstrap 95% CIs and the macro average over models (never pooled over samples).
    """
    from cxr_attrib.outputs import check_outputs, write_files

    from .report import REPORT_METRICS, build_report, labeller, table_files
    from .report_html import render_html
    from .store_units import read_recognition, read_units, store_files
    from .xbench_report import XBENCH_FILES, build_xbench, xbench_files, xbench_html, xbench_markdown

    console = Console()
    chosen = set(formats or FORMATS)
    suffixes = {"markdown": "md", "csv": "csv", "json": "json", "html": "html"}
    destinations = [out / f"report.{suffixes[kind]}" for kind in FORMATS if kind in chosen - {"table"}]
    xbench_paths = [out / name for name in XBENCH_FILES] if destinations else []
    check_outputs(destinations + xbench_paths, inputs=store_files(stores))  # before any work
    config, units = read_units(stores)
    report = build_report(units, rank_by=rank_by, metrics=_names(metrics) or REPORT_METRICS,
                          n_boot=n_boot, seed=seed)
    if "table" in chosen:
        from cxr_attrib.scoring.aggregate import to_rich_table

        shown = list(dict.fromkeys([rank_by, *(m for m in TERMINAL_METRICS if m in report.metrics)]))
        console.print(to_rich_table(report.rows, shown[:4], lead=report.lead,
                                    title=f"Leaderboard (ranked by macro {rank_by})"))
    if not destinations:
        return
    files = table_files(report, out, [kind for kind in chosen if kind in ("markdown", "csv", "json")])
    section = build_xbench(units, read_recognition(stores), n_boot=n_boot, seed=seed)
    if section is not None:  # the XBench section: appended to report.md, its JSON and figures beside it
        if out / "report.md" in files:
            files[out / "report.md"] += b"\n" + xbench_markdown(section).encode("utf-8")
        files.update(xbench_files(section, out))
    if "html" in chosen:
        thumbs = _thumbnails(stores, units, labeller(units), thumbnails) if thumbnails else None
        page = render_html(report, thumbs, title=title, run=config.to_dict(),
                           xbench=None if section is None else xbench_html(section))
        files[out / "report.html"] = page.encode("utf-8")
    try:
        write_files(files, root=out)  # all or none; no link below --out followed
    except OSError as exc:
        raise DataError(f"cannot write the report into {out}: {exc.strerror or exc}; "
                        "choose a writable --out folder.") from None
    console.print(terminal_text("wrote " + ", ".join(str(p) for p in destinations)), highlight=False)


def _thumbnails(stores, units, label, per_method):
    """Overlays of ``per_method`` units per method, heatmaps read from the stores."""
    from .store_units import with_arrays
    from .thumbnails import pick_units, thumbnails

    picked = pick_units(units, label, per_method)
    filled = iter(with_arrays(stores, [u for chosen in picked.values() for u in chosen]))
    return thumbnails({method: [next(filled) for _ in chosen] for method, chosen in picked.items()})
