"""What does the file boundary and the sanitising cost? Its share of the wall time, measured side by side.

Two workloads, each run in this process with every boundary function timed (its own
time only: the outermost call of ``cxr_attrib.safeio``, ``cxr_attrib.outputs``,
``cxr_attrib.paths``, ``cxr_attrib.sanitise`` and ``Param.check``; for the context
managers, their enter and exit, not the work done inside them):

1. **attribute on the demo case**: the demo phantom (held-out effusion, seed
   ``DEMO_SEED``) read from a PNG file, ``attribute`` with occlusion and with MedFocus
   on phantom-qwen, and ``result.save`` of the overlay and the JSON;
2. **a ~100-unit leaderboard**: ``cxr-attrib leaderboard`` on phantom-gemma, occlusion
   (2 x 2 tiles) plus every model-free method (priors, reference rows) over
   ``round(100 / methods)`` samples, no causal filter, then ``cxr-attrib report``.

The boundary's time over the workload's wall time bounds what removing it could save,
so "within 2% of before" holds when that share is under 2%. Each workload runs
``--repeats`` times; the figures are the median.

``--side-by-side BEFORE AFTER`` also times the same workloads on two git revisions
(exported with ``git archive``; each run a fresh process with that tree first on
``sys.path``), alternating BEFORE, AFTER, BEFORE, ... so machine noise hits both alike,
and prints the median wall time of each and their ratio.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_io_boundary.py [--repeats 3]
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_io_boundary.py --side-by-side 741b378 d7a23b1
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

_SPENT = [0.0]
_DEPTH = [0]
_BY_NAME: dict[str, float] = {}


def _timed(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with its outermost calls' time added to ``_SPENT``."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _DEPTH[0]:
            return function(*args, **kwargs)
        _DEPTH[0] += 1
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            took = time.perf_counter() - start
            _SPENT[0] += took
            _BY_NAME[function.__qualname__] = _BY_NAME.get(function.__qualname__, 0.0) + took
            _DEPTH[0] -= 1

    return wrapper


def _timed_context(function: Callable[..., Any]) -> Callable[..., Any]:
    """A context-manager factory whose enter and exit (not its body) are timed."""

    @functools.wraps(function)
    @contextlib.contextmanager
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        start = time.perf_counter()
        manager = function(*args, **kwargs)
        value = manager.__enter__()
        _SPENT[0] += time.perf_counter() - start
        try:
            yield value
        except BaseException:
            start = time.perf_counter()
            if not manager.__exit__(*sys.exc_info()):
                raise
        else:
            start = time.perf_counter()
            manager.__exit__(None, None, None)
        finally:
            _SPENT[0] += time.perf_counter() - start

    return wrapper


def instrument() -> int:
    """Replace every boundary function, wherever it was imported, by its timed twin; returns how many."""
    import cxr_attrib.method as method
    import cxr_attrib.outputs as outputs
    import cxr_attrib.paths as paths
    import cxr_attrib.safeio as safeio
    import cxr_attrib.sanitise as sanitise

    contexts = {"open_regular", "building_sqlite", "exclusive_lock"}
    originals = {}
    for module in (safeio, outputs, paths, sanitise):
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value) and not isinstance(value, type):
                originals[id(value)] = (_timed_context if name in contexts else _timed)(value)
    patched = 0
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith(("cxr_attrib", "plugins", "adapters")):
            continue
        for name, value in list(vars(module).items()):
            if id(value) in originals and callable(value):
                setattr(module, name, originals[id(value)])
                patched += 1
    method.Param.check = _timed(method.Param.check)
    return patched + 1


def attribute_demo(folder: Path) -> None:
    """attribute() on the demo phantom (read from a PNG), occlusion and MedFocus, each saved."""
    from PIL import Image

    from cxr_attrib import attribute
    from cxr_attrib_phantom.benchmark import phantom_sample
    from cxr_attrib_phantom.demo import DEMO_SEED

    sample = phantom_sample(DEMO_SEED, "pleural_effusion")
    image = folder / "phantom.png"
    Image.fromarray(sample.load_image()).save(image)  # set-up: the user's input file
    for method, params in (("occlusion", {"tiles": 4}), ("medfocus", {})):
        result = attribute("phantom-qwen", image, sample.question, method=method, **params)
        result.save(folder / f"{method}.png", folder / f"{method}.json")


def leaderboard_100(folder: Path) -> None:
    """A leaderboard of about 100 units (occlusion and every model-free method over enough samples) and its report."""
    from click.testing import CliRunner

    from cxr_attrib.cli import cli
    from cxr_attrib.leaderboard import open_store
    from cxr_attrib.registry import methods

    per_sample = 1 + sum(not cls.uses_model for cls in methods().values())  # the priors always run
    runner = CliRunner()
    run = runner.invoke(cli, ["leaderboard", "-b", "phantom", "-m", "phantom-gemma", "--methods", "occlusion",
                              "-p", "occlusion.tiles=2", "--limit", str(round(100 / per_sample)), "--filter", "none",
                              "--steps", "2", "--n-random", "2", "--out", str(folder / "run")], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    with open_store(folder / "run" / "leaderboard.sqlite") as store:
        units = sum(store.counts().values())
    print(f"units: {units}", file=sys.stderr)
    report = runner.invoke(cli, ["report", str(folder / "run"), "--out", str(folder / "report"), "--n-boot", "100"],
                           catch_exceptions=False)
    assert report.exit_code == 0, report.output


def measure(workload: Callable[[Path], None], repeats: int) -> tuple[float, float]:
    """Median wall seconds and median boundary seconds of ``repeats`` runs, each in a fresh folder."""
    walls, spent = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            _SPENT[0] = 0.0
            _BY_NAME.clear()
            start = time.perf_counter()
            workload(Path(folder))
            walls.append(time.perf_counter() - start)
            spent.append(_SPENT[0])
    return statistics.median(walls), statistics.median(spent)


WORKLOADS = {"attribute": attribute_demo, "leaderboard": leaderboard_100}


def _export(revision: str, folder: Path) -> Path:
    """The tree of ``revision`` of this repository, unpacked under ``folder``."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    tree = folder / revision
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(root), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def side_by_side(before: str, after: str, repeats: int, names: list[str]) -> None:
    """Median wall seconds of each workload on two revisions, run alternately in fresh processes."""
    import os
    import subprocess

    with tempfile.TemporaryDirectory() as folder:
        trees = {rev: _export(rev, Path(folder)) for rev in (before, after)}
        for name in names:
            times: dict[str, list[float]] = {before: [], after: []}
            for _ in range(repeats):
                for rev, tree in trees.items():
                    path = os.pathsep.join(str(tree / part) for part in ("", "plugins", "adapters"))
                    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
                    out = subprocess.run([sys.executable, __file__, "--run", name], env=env, check=True,
                                         capture_output=True, text=True).stdout
                    times[rev].append(float(out.strip().splitlines()[-1]))
            a, b = statistics.median(times[before]), statistics.median(times[after])
            print(f"{name}: {before} {a:.2f} s, {after} {b:.2f} s (medians of {repeats}, alternating); "
                  f"after / before = {b / a:.3f}")


def write_path_side_by_side(before: str, repeats: int) -> None:
    """``write_files`` of an overlay-sized pair: ``before``'s ``cxr_attrib/outputs.py`` and this one, alternating."""
    import importlib.util
    import subprocess

    from cxr_attrib import outputs

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{before}:cxr_attrib/outputs.py"], check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as folder:
        module_path = Path(folder) / "outputs_before.py"
        module_path.write_text(source.replace("from .errors import", "from cxr_attrib.errors import"))  # set-up
        spec = importlib.util.spec_from_file_location("outputs_before", module_path)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        payload = {Path(folder) / "a.png": b"x" * 60_000, Path(folder) / "a.json": b"{}" * 20_000}
        times: dict[str, list[float]] = {before: [], "this tree": []}
        for _ in range(repeats):
            for name, module in ((before, old), ("this tree", outputs)):
                start = time.perf_counter()
                module.write_files(payload)
                times[name].append(time.perf_counter() - start)
    a, b = (statistics.median(v) * 1000 for v in times.values())
    print(f"write_files (2 files, 100 kB): {before} {a:.2f} ms, this tree {b:.2f} ms (medians of {repeats}, "
          f"alternating); after / before = {b / a:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side-by-side", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--workloads", default="attribute,leaderboard", help="comma list of: attribute, leaderboard")
    parser.add_argument("--run", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.side_by_side:
        write_path_side_by_side(args.side_by_side[0], 10 * args.repeats)
        side_by_side(*args.side_by_side, args.repeats, args.workloads.split(","))
        return
    if args.run:  # one timed run in this process (the side-by-side child): prints its wall seconds
        with tempfile.TemporaryDirectory() as folder:
            if args.run == "attribute":  # warm: imports, weights, caches (a leaderboard warms itself)
                WORKLOADS[args.run](Path(tempfile.mkdtemp(dir=folder)))
            start = time.perf_counter()
            WORKLOADS[args.run](Path(tempfile.mkdtemp(dir=folder)))
            print(time.perf_counter() - start)
        return
    from cxr_attrib.registry import load_plugins

    load_plugins()
    with tempfile.TemporaryDirectory() as folder:
        attribute_demo(Path(folder))  # warm-up: imports, model files in the page cache
    print(f"timed boundary functions: {instrument()}")
    chosen = args.workloads.split(",")
    for label, workload in (("attribute on the demo case", attribute_demo),
                            ("~100-unit leaderboard + report", leaderboard_100)):
        if workload not in [WORKLOADS[name] for name in chosen]:
            continue
        wall, spent = measure(workload, args.repeats)
        print(f"{label}: {wall:.2f} s wall (median of {args.repeats}); boundary {spent * 1000:.1f} ms = "
              f"{100 * spent / wall:.3f}% of the wall time")
        top = sorted(_BY_NAME.items(), key=lambda item: -item[1])[:4]  # of the last repeat
        print("  largest: " + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in top))


if __name__ == "__main__":
    main()
