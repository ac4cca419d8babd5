"""The file boundary's guarantees on every user-facing surface, end to end through the CLI.

For each writer (``attribute``, ``compare``, ``leaderboard``, ``merge``, ``report``,
``said-vs-used``, ``pool build``, ``filter``, ``demo``, the MedFocus / anatomy-prior transfer cache): an output
inside ``$CXR_ATTRIB_DATA`` is refused in one line with nothing written; a symlink
planted at a predictable destination name (and, where the writer makes sub-folders, a
linked sub-folder) never lets a victim file outside be written; a link planted at the
temporary name (made predictable here) is never followed. For each reader (the image
of ``attribute`` / ``compare``, a result JSON, a store of ``report`` / ``merge`` /
``said-vs-used`` / ``leaderboard --out``, a pool file, a counterfactual of ``filter``, a
benchmark file under the data root, a transfer-cache entry): a FIFO is refused with a clear error, never opened for a blocking read. Every
FIFO run has a deadline, so a regression fails instead of hanging CI.

Runs are tiny: model-free priors (``-m none``), the embedded phantom-gemma with the
``center`` prior, one sample, a 2-step scorer; one leaderboard store is made per module.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cxr_attrib.cli import cli

Q = "Is there evidence of nodule in the image?"
VICTIM = b"precious: never written by cxr-attrib"
FIFO_DEADLINE_S = 30.0


def invoke(*args: str) -> tuple[int, str]:
    """Exit code and the output with rich's line wrapping undone."""
    result = CliRunner().invoke(cli, list(args), terminal_width=400)
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """An image, one leaderboard store and a pool source folder, made once (never modified)."""
    from cxr_attrib.pools import CONCEPTS

    folder = tmp_path_factory.mktemp("inputs")
    image = folder / "x.png"
    y, x = np.mgrid[0:64, 0:64]  # two bright lobes: content the transport of the anatomy prior can move
    lobes = sum(np.exp(-((x - cx) ** 2 + (y - 32) ** 2) / 200) for cx in (20, 44))
    Image.fromarray((60 + 120 * lobes).astype(np.uint8)).save(image)
    code, output = invoke("leaderboard", "-b", "phantom", "-m", "phantom-gemma", "--methods", "center", "--limit", "1",
                          "--steps", "2", "--n-random", "2", "--fill", "zero", "--out", str(folder / "run"))
    assert code == 0, output
    masks = folder / "masks"
    (masks / "images").mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 120, np.uint8)).save(masks / "images" / "a.png")
    (masks / "masks" / "a").mkdir(parents=True)
    for concept in CONCEPTS:
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(masks / "masks" / "a" / f"{concept}.png")
    return {"image": image, "store": folder / "run" / "leaderboard.sqlite", "masks": masks}


# -- the writers: how each is run into an output folder, and the names it writes there ------------------

WRITERS: dict[str, tuple[Callable[[dict[str, Path], Path], list[str]], tuple[str, ...]]] = {
    "attribute --out": (lambda i, out: ["attribute", str(i["image"]), "-q", Q, "-m", "none", "--method", "center",
                                        "--answer", "Yes", "--out", str(out / "overlay.png")],
                        ("overlay.png", "overlay.json")),
    "compare --out": (lambda i, out: ["compare", str(i["image"]), "-q", Q, "-m", "phantom-gemma", "--methods",
                                      "center", "--answer", "Yes", "--no-faithfulness", "--out", str(out)],
                      ("compare.png", "index.html", "result-center.json")),
    "leaderboard --out": (lambda i, out: ["leaderboard", "-b", "phantom", "-m", "phantom-gemma", "--methods", "center",
                                          "--limit", "1", "--steps", "2", "--n-random", "2", "--fill", "zero",
                                          "--out", str(out)],
                          ("leaderboard.sqlite",)),
    "merge": (lambda i, out: ["merge", str(out / "merged.sqlite"), str(i["store"])], ("merged.sqlite",)),
    "report --out": (lambda i, out: ["report", str(i["store"]), "--out", str(out), "--n-boot", "5",
                                     "--thumbnails", "1"],
                     ("report.md", "report.csv", "report.json", "report.html")),
    "said-vs-used --out": (lambda i, out: ["said-vs-used", str(i["store"]), "--said", "whole_image", "--used",
                                           "center", "--out", str(out / "said.md")],
                           ("said.md",)),
    "pool build": (lambda i, out: ["pool", "build", "--from-folder", str(i["masks"]), "--name", "site",
                                   "--out", str(out)],
                   ("manifest.json",)),
    "demo --out (phantom plugin)": (lambda i, out: ["demo", "-m", "phantom-gemma", "--methods", "center",
                                                    "--out", str(out)],
                                    ("phantom.png", "compare.png", "index.html", "result-center.json")),
    "filter --out": (lambda i, out: ["filter", "-m", "phantom-gemma", "-b", "phantom", "--limit", "1",
                                     "--max-new-tokens", "4", "--out", str(out / "records.json")],
                     ("records.json",)),
    "transfer cache (-p cache_dir)": (
        lambda i, out: ["attribute", str(i["image"]), "-q", Q, "-m", "none", "--method", "anatomy_prior", "--answer",
                        "Yes", "-p", f"cache_dir={out}", "--out", str(i["image"].parent / "cache-overlay.png")],
        ()),
}
"""Writer -> (its command line writing into ``out``, the file names it writes there)."""

STORE_WRITERS = {"leaderboard --out", "merge"}
"""Writers that create a store and never replace an existing one (a planted link is refused)."""


def _victims(tmp_path: Path, names) -> dict[str, Path]:
    victims = {}
    for name in names:
        victim = tmp_path / "elsewhere" / name
        victim.parent.mkdir(exist_ok=True)
        victim.write_bytes(VICTIM)
        victims[name] = victim
    return victims


def _untouched(victims: dict[str, Path]) -> bool:
    return all(v.read_bytes() == VICTIM and not v.is_symlink() for v in victims.values())


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_output_option_refuses_the_data_root_in_one_line(inputs, tmp_path, monkeypatch, writer):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("CXR_ATTRIB_DATA", str(data))
    command, _ = WRITERS[writer]
    code, output = invoke(*command(inputs, data / "out"))
    assert code == 1, output
    assert "inside the data folder" in output and "never written to" in output, output
    assert output.count("Error") <= 1 and "Traceback" not in output, output
    assert list(data.iterdir()) == [], "something was written inside the data root"


@pytest.mark.parametrize("writer", [w for w in WRITERS if WRITERS[w][1]])
def test_a_link_planted_at_each_destination_name_is_never_written_through(inputs, tmp_path, writer):
    command, names = WRITERS[writer]
    out = tmp_path / "out"
    out.mkdir()
    victims = _victims(tmp_path, names)
    for name, victim in victims.items():
        (out / name).symlink_to(victim)
    code, output = invoke(*command(inputs, out))
    assert _untouched(victims), f"{writer} wrote through a planted link"
    if writer == "leaderboard --out":  # the link is read (never written) as a store there, and refused
        assert code == 1 and "is not a SQLite file" in output, output
        assert all((out / n).is_symlink() for n in names)
    elif writer == "merge":  # a merged store never replaces anything
        assert code == 1 and "refusing to overwrite" in output, output
        assert all((out / n).is_symlink() for n in names)
    elif writer == "pool build":  # a folder holding a manifest is another pool: refused without --overwrite
        assert code == 1 and "already holds a concept pool" in output, output
    else:  # replaced atomically: the link itself is swapped for the new file
        assert code == 0, output
        assert all((out / n).is_file() and not (out / n).is_symlink() for n in names)


def test_pool_build_over_a_planted_manifest_link_with_overwrite_replaces_the_link(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victims = _victims(tmp_path, ["manifest.json"])
    (out / "manifest.json").symlink_to(victims["manifest.json"])
    code, output = invoke(*WRITERS["pool build"][0](inputs, out), "--overwrite")
    assert code == 0, output
    assert _untouched(victims) and not (out / "manifest.json").is_symlink()


@pytest.mark.parametrize("sub", ["images", "masks"])
def test_pool_build_refuses_a_linked_sub_folder(inputs, tmp_path, sub):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / sub).symlink_to(elsewhere, target_is_directory=True)
    code, output = invoke(*WRITERS["pool build"][0](inputs, out))
    assert code == 1 and "symbolic link below the output folder" in output, output
    assert list(elsewhere.iterdir()) == [] and [p.name for p in out.iterdir()] == [sub]  # no file, no new folder


@pytest.mark.parametrize("writer", [w for w in WRITERS if WRITERS[w][1]])
def test_a_link_planted_at_the_temporary_name_is_never_followed(inputs, tmp_path, monkeypatch, writer):
    """With the random part of temporary names made predictable, a link planted there only makes the write fail."""
    import cxr_attrib.outputs
    import cxr_attrib.safeio

    command, names = WRITERS[writer]
    monkeypatch.setattr(cxr_attrib.outputs.secrets, "token_hex", lambda n: "planted")
    monkeypatch.setattr(cxr_attrib.safeio.secrets, "token_hex", lambda n: "planted")
    out = tmp_path / "out"
    out.mkdir()
    victims = _victims(tmp_path, names)
    suffix = "building" if writer in STORE_WRITERS else "tmp"
    for name, victim in victims.items():
        (out / f".{name}.planted.{suffix}").symlink_to(victim)
    code, output = invoke(*command(inputs, out))
    assert _untouched(victims), f"{writer} wrote through a link at its temporary name"
    assert code == 1 and "fresh names were all taken" in output, output
    assert not any(os.path.lexists(out / n) for n in names), "a destination was written"


def test_a_link_planted_at_the_shard_lock_is_refused(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victims = _victims(tmp_path, ["lock"])
    (out / ".leaderboard.sqlite.lock").symlink_to(victims["lock"])
    code, output = invoke(*WRITERS["leaderboard --out"][0](inputs, out))
    assert _untouched(victims)
    assert code == 1 and "symbolic link" in output and ".leaderboard.sqlite.lock" in output, output
    assert not os.path.lexists(out / "leaderboard.sqlite")


def test_resume_refuses_a_store_that_is_a_planted_link(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "elsewhere.sqlite"
    victim.write_bytes(inputs["store"].read_bytes())
    before = victim.read_bytes()
    (out / "leaderboard.sqlite").symlink_to(victim)
    code, output = invoke(*WRITERS["leaderboard --out"][0](inputs, out), "--resume")
    assert victim.read_bytes() == before
    assert code == 1 and "symbolic link" in output, output


# -- the readers: a FIFO is refused, with a deadline so a regression cannot hang ------------------------


def _with_deadline(fifo: Path, run: Callable[[], tuple[int, str]]) -> tuple[int, str]:
    """``run()`` in a thread; if it is still blocked on ``fifo`` at the deadline, unblock it and fail."""
    box: dict[str, tuple[int, str]] = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", run()), daemon=True)
    thread.start()
    thread.join(FIFO_DEADLINE_S)
    if thread.is_alive():
        try:  # a reader blocked in open() returns once a writer opens and closes the other end
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        thread.join(5)
        pytest.fail(f"reading the FIFO {fifo} blocked for {FIFO_DEADLINE_S:.0f} s instead of being refused")
    return box["result"]


def _api(call: Callable[[], object]) -> tuple[int, str]:
    """Run an API call like a command: (1, its error's message) or (0, '')."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        return 1, f"{type(exc).__name__}: {exc}"
    return 0, ""


def _fifo_image(i, fifo):
    return ["attribute", str(fifo), "-q", Q, "-m", "none", "--method", "center", "--answer", "Yes",
            "--out", str(fifo.parent / "o.png")]


def _fifo_compare(i, fifo):
    return ["compare", str(fifo), "-q", Q, "-m", "phantom-gemma", "--methods", "center", "--answer", "Yes",
            "--no-faithfulness", "--out", str(fifo.parent / "cmp")]


def _pool_folder(i: dict[str, Path], folder: Path, fifo_name: str) -> Path:
    code, output = invoke(*WRITERS["pool build"][0](i, folder))
    assert code == 0, output
    path = next(folder.glob(fifo_name))
    path.unlink()
    return path


READERS: dict[str, tuple[str, Callable]] = {
    # reader -> (where the FIFO goes, relative to a fresh folder; the run given the inputs and the FIFO)
    "attribute IMAGE": ("x.png", lambda i, fifo: invoke(*_fifo_image(i, fifo))),
    "compare IMAGE": ("x.png", lambda i, fifo: invoke(*_fifo_compare(i, fifo))),
    "Attribution.load (result JSON)": ("r.json", lambda i, fifo: _api(lambda: __import__(
        "cxr_attrib.result", fromlist=["Attribution"]).Attribution.load(fifo))),
    "report STORE": ("s.sqlite", lambda i, fifo: invoke("report", str(fifo), "--out", str(fifo.parent / "rep"))),
    "report FOLDER of shards": ("shards/shard-0-of-1.sqlite",
                                lambda i, fifo: invoke("report", str(fifo.parent), "--out", str(fifo.parent.parent / "r"))),
    "merge SHARDS": ("s.sqlite", lambda i, fifo: invoke("merge", str(fifo.parent / "m.sqlite"), str(fifo))),
    "said-vs-used STORE": ("s.sqlite", lambda i, fifo: invoke("said-vs-used", str(fifo))),
    "leaderboard --out (a store already there)": (
        "run/leaderboard.sqlite", lambda i, fifo: invoke(*WRITERS["leaderboard --out"][0](i, fifo.parent))),
    "pool check (manifest)": ("pool/manifest.json", lambda i, fifo: invoke("pool", "check", str(fifo.parent))),
    "pool check (image)": ("pool/images/*", lambda i, fifo: invoke("pool", "check", str(fifo.parents[1]))),
    "pool build --from-folder (mask)": (
        "src/masks/a/left_lung.png",
        lambda i, fifo: invoke("pool", "build", "--from-folder", str(fifo.parents[2]), "--name", "x",
                               "--out", str(fifo.parents[3] / "built"))),
    "filter --counterfactuals (an edit)": (
        "edits/phantom/10000000_edited.png",
        lambda i, fifo: invoke("filter", "-m", "phantom-gemma", "-b", "phantom", "--limit", "1", "--max-new-tokens",
                               "4", "--counterfactuals", str(fifo.parents[1]), "--out", str(fifo.parents[2] / "r.json"))),
    "benchmark file under the data root (medground)": (
        "data/medground_bench/direct.json",
        lambda i, fifo: invoke("leaderboard", "-b", "medground", "-m", "phantom-gemma", "--methods", "center",
                               "--limit", "1", "--out", str(fifo.parents[2] / "lb"))),
}


def _prepare(inputs: dict[str, Path], tmp_path: Path, reader: str) -> Path:
    """Lay out what the reader needs around the FIFO, then make the FIFO."""
    import shutil

    where, _ = READERS[reader]
    fifo = tmp_path / where
    if reader.startswith("pool check"):
        fifo = _pool_folder(inputs, tmp_path / "pool", where.removeprefix("pool/"))
    elif reader.startswith("pool build"):
        shutil.copytree(inputs["masks"], tmp_path / "src")
        fifo.unlink()
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    return fifo


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_refuses_a_fifo_without_blocking(inputs, tmp_path, monkeypatch, reader):
    fifo = _prepare(inputs, tmp_path, reader)
    if "data root" in reader:
        monkeypatch.setenv("CXR_ATTRIB_DATA", str(tmp_path / "data"))
    code, output = _with_deadline(fifo, lambda: READERS[reader][1](inputs, fifo))
    assert code != 0, output
    assert "FIFO" in output and fifo.name in output, output
    assert "Traceback" not in output, output


def test_a_transfer_cache_entry_that_is_a_fifo_is_refused(inputs, tmp_path):
    """The anatomy prior's cache: the first run writes an entry; a FIFO put in its place is refused on the next."""
    cache = tmp_path / "cache"
    command = WRITERS["transfer cache (-p cache_dir)"][0]
    code, output = invoke(*command(inputs, cache))
    assert code == 0, output
    entry = sorted(cache.glob("*.json"))[0]
    entry.unlink()
    os.mkfifo(entry)
    code, output = _with_deadline(entry, lambda: invoke(*command(inputs, cache)))
    assert code == 1 and "FIFO" in output and entry.name in output, output
