"""``cxr-attrib pool``: list, check and build concept pools (see docs/concept-pools.md)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .sanitise import for_terminal, terminal_text

__all__ = ["pool"]

console = Console()


@click.group("pool")
def pool() -> None:
    """Concept pools: normal images with one mask per anatomical concept."""


@pool.command("list")
def list_pools() -> None:
    """List the registered pools."""
    from .registry import pools

    table = Table("pool", "references", "source", title="Concept pools")
    for name, registered in pools().items():
        table.add_row(for_terminal(name), str(len(registered)), for_terminal(registered.source))
    console.print(table)


@pool.command("check")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def check(folder: Path) -> None:
    """Read every image and mask of the pool in FOLDER and report the first problem."""
    from .pools import load_pool

    loaded = load_pool(folder)
    loaded.validate()
    console.print(terminal_text(f"pool {loaded.name!r}: {len(loaded)} references, all 11 masks each: ok"))


@pool.command("build")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="New pool folder (never inside $CXR_ATTRIB_DATA or a source folder).")
@click.option("--name", required=True, help="Pool name (lower-case letters, digits, '_' or '-').")
@click.option("--from-scene-graphs", "scene_graphs", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Folder of Chest ImaGenome <image_id>_SceneGraph.json files.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --from-scene-graphs: folder searched for <image_id>.<png|jpg|dcm...>.")
@click.option("--ids", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --from-scene-graphs: text file, one image id per line (e.g. normal studies).")
@click.option("--from-folder", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with images/<id>.<ext> and masks/<id>/<concept>.png.")
@click.option("--overwrite", is_flag=True, help="Replace a pool already in --out.")
def build(out: Path, name: str, scene_graphs: Path | None, images: Path | None, ids: Path | None,
          folder: Path | None, overwrite: bool) -> None:
    """Build a pool folder from scene-graph boxes or from a folder of masks."""
    from .pool_build import folder_references, scene_graph_references
    from .pools import load_pool, write_pool
    from .safeio import read_text

    if (scene_graphs is None) == (folder is None):
        raise click.UsageError("pass exactly one of --from-scene-graphs DIR and --from-folder DIR")
    if scene_graphs is not None:
        if images is None:
            raise click.UsageError("--from-scene-graphs needs --images DIR")
        wanted = read_text(ids, what="--ids file").splitlines() if ids is not None else None
        references = scene_graph_references(scene_graphs, images, ids=wanted)
        protected = [scene_graphs, images]
    else:
        if images is not None or ids is not None:
            raise click.UsageError("--images and --ids go with --from-scene-graphs")
        references = folder_references(folder)
        protected = [folder]
    written = write_pool(out, name, references, protected=protected, overwrite=overwrite)
    console.print(terminal_text(f"wrote pool {name!r} with {len(load_pool(written))} references to {written}"))
