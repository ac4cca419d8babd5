"""``cxr-attrib leaderboard`` / ``merge``: resume, shards, torchrun, failures, bad input.

Runs are tiny: the embedded phantom-gemma model, occlusion with 2 x 2 tiles plus the
priors, a few phantom samples, a 2-step scorer. Every comparison is on the unit
results (status, answer, boxes, metrics), never on times.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cxr_attrib.benchmark import Benchmark
from cxr_attrib.cli import cli
from cxr_attrib.errors import ImageLoadError
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.leaderboard import open_store
from cxr_attrib.leaderboard.config import sample_key
from cxr_attrib.leaderboard.merge import same_results
from cxr_attrib.leaderboard.shard import Shard, ShardError, parse_shard, resolve_shard
from cxr_attrib.leaderboard.store import SCHEMA_VERSION
from cxr_attrib.method import Method, MethodOutput
from cxr_attrib_phantom.benchmark import HELD_OUT_START, phantom_sample

BIN = Path(sys.executable).parent
RUN = ["leaderboard", "-b", "phantom", "-m", "phantom-gemma", "--methods", "occlusion", "-p", "occlusion.tiles=2",
       "--per-finding", "1", "--limit", "6", "--steps", "2", "--n-random", "2", "--fill", "zero"]
PRIORS = ("anatomy_prior", "center", "random", "truth", "whole_image")  # the priors and references, always run
UNITS = 6 * (1 + len(PRIORS))  # six findings x (occlusion and every prior)
SMALL = ["leaderboard", "-b", "phantom", "-m", "phantom-gemma", "--methods", "center", "--limit", "1",
         "--steps", "2", "--n-random", "2", "--fill", "zero"]  # one unit per prior


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def results(path: Path) -> dict[str, object]:
    with open_store(path) as store:
        return {u.unit_id: u for u in store.units()}


def assert_same_units(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want), "missing or extra units"
    for uid, unit in want.items():
        assert not same_results(got[uid], unit), (uid, same_results(got[uid], unit))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Runs in this process use one torch thread, like the subprocesses they are compared with
    (``OMP_NUM_THREADS=1``): kernels on another thread count round differently."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory) -> Path:
    """The store of one uninterrupted, unsharded run in this process (do not modify it)."""
    out = tmp_path_factory.mktemp("reference")
    code, output = invoke(*RUN, "--out", str(out))
    assert code == 0, output
    return out / "leaderboard.sqlite"


@pytest.fixture(scope="module")
def reference(reference_store) -> dict:
    """The units of the reference run, by unit id."""
    units = results(reference_store)
    assert len(units) == UNITS and all(u.ok for u in units.values())
    return units


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(BIN / "cxr-attrib"), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def _stored(path: Path) -> int:
    try:
        with closing(sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)) as db:
            return db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
    except sqlite3.Error:
        return 0


def _stop_after(proc: subprocess.Popen, path: Path, units: int, sig: int) -> int:
    """Send ``sig`` once ``units`` rows are committed; return how many were committed then."""
    deadline = time.monotonic() + 300
    while _stored(path) < units:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return _stored(path)


@pytest.mark.slow
def test_sigterm_then_sigkill_then_resume_equals_one_run(tmp_path, reference):
    store = tmp_path / "leaderboard.sqlite"
    first = _cli(*RUN, "--out", str(tmp_path))
    stopped = _stop_after(first, store, 2, signal.SIGTERM)
    assert first.returncode == 130 and "--resume" in first.stdout.read()
    assert not Path(f"{store}-wal").exists()  # a clean stop folds the journal back
    assert 2 <= stopped < UNITS
    second = _cli(*RUN, "--out", str(tmp_path), "--resume")
    killed = _stop_after(second, store, stopped + 3, signal.SIGKILL)
    assert second.returncode == -signal.SIGKILL and stopped + 3 <= killed < UNITS
    third = _cli(*RUN, "--out", str(tmp_path), "--resume")
    assert third.wait(timeout=600) == 0, third.stdout.read()
    assert f"{UNITS - killed} units run" in third.stdout.read()  # nothing redone
    assert_same_units(results(store), reference)
    with open_store(store) as opened:
        loads = opened.model_loads()
    assert [load.model for load in loads] == ["phantom-gemma"] * 3  # one load per process
    assert len({load.worker for load in loads}) == 3


def test_resume_of_a_finished_run_loads_no_model(tmp_path, reference_store, reference):
    (tmp_path / "leaderboard.sqlite").write_bytes(reference_store.read_bytes())
    code, output = invoke(*RUN, "--out", str(tmp_path), "--resume")
    assert code == 0 and f"0 units run (0 failed), {UNITS} already stored" in output
    with open_store(tmp_path / "leaderboard.sqlite") as store:
        assert len(store.model_loads()) == 1
    assert_same_units(results(tmp_path / "leaderboard.sqlite"), reference)


def test_three_shards_merged_equal_one_process(tmp_path, reference):
    for k in range(3):
        code, output = invoke(*RUN, "--out", str(tmp_path), "--shard", f"{k}/3")
        assert code == 0, output
    shards = sorted(tmp_path.glob("shard-*-of-3.sqlite"))
    sizes = [len(results(p)) for p in shards]
    assert len(shards) == 3 and sum(sizes) == UNITS and all(sizes)
    code, output = invoke("merge", str(tmp_path / "merged.sqlite"), *map(str, shards), *map(str, shards[:1]))
    assert code == 0 and f"{UNITS} units, {sizes[0]} duplicate(s) removed, 0 conflict(s)" in output
    assert_same_units(results(tmp_path / "merged.sqlite"), reference)


def test_priors_are_every_model_free_method():
    from cxr_attrib import registry

    assert PRIORS == tuple(sorted(name for name, cls in registry.methods().items() if not cls.uses_model))


def test_merge_reports_conflicts(tmp_path, reference_store, reference):
    b = tmp_path / "b.sqlite"
    b.write_bytes(reference_store.read_bytes())
    with sqlite3.connect(b) as db:
        db.execute("UPDATE units SET metrics = json_set(metrics, '$.iou', 0.123456) WHERE method = 'center'")
    code, output = invoke("merge", str(tmp_path / "m.sqlite"), str(reference_store), str(b))
    # every unit but the six of 'center' is a duplicate; those six conflict
    assert code == 2 and f"{UNITS - 6} duplicate(s) removed, 6 conflict(s)" in output and "metrics.iou" in output
    kept = {u.unit_id: u for u in results(tmp_path / "m.sqlite").values()}
    assert_same_units(kept, reference)  # the first input wins


@pytest.mark.slow
def test_torchrun_two_ranks_merged_equal_one_process(tmp_path, reference):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--no-python",
         str(BIN / "cxr-attrib"), *RUN, "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shards = sorted(tmp_path.glob("shard-*-of-2.sqlite"))
    assert [p.name for p in shards] == ["shard-0-of-2.sqlite", "shard-1-of-2.sqlite"]
    for path in shards:
        with open_store(path) as store:
            assert store.shard in ("0/2", "1/2") and len(store.model_loads()) == 1
    code, output = invoke("merge", str(tmp_path / "all.sqlite"), *map(str, shards))
    assert code == 0, output
    assert_same_units(results(tmp_path / "all.sqlite"), reference)


class _Boom(Method):
    name = "boom"
    summary = "Raises on the mass question, a flat map otherwise."
    reference = "A test stub."
    output = "heatmap"

    def attribute(self, request):
        if "mass" in request.query.question:
            raise RuntimeError("boom on the mass sample")
        return MethodOutput(heatmap=np.ones((request.size, request.size), dtype=np.float32))


class _BoomPlugin:
    __name__ = "BoomPlugin"

    @staticmethod
    @hookimpl
    def register_methods(register):
        register(_Boom)


def test_a_raising_method_fails_only_its_unit(tmp_path, registered_plugin):
    registered_plugin(_BoomPlugin)
    code, output = invoke("leaderboard", "-b", "phantom", "-m", "phantom-gemma", "--methods", "boom",
                          "--per-finding", "1", "--limit", "3", "--steps", "2", "--n-random", "2",
                          "--fill", "zero", "--out", str(tmp_path))
    assert code == 0, output
    units = list(results(tmp_path / "leaderboard.sqlite").values())
    failed = [u for u in units if not u.ok]
    assert len(units) == 3 * (1 + len(PRIORS)) and len(failed) == 1  # nodule, mass, effusion x (boom, priors)
    assert failed[0].method == "boom" and failed[0].sample.finding == "mass"
    # the error names the method and its plugin, then the method's own exception
    assert failed[0].error.startswith("MethodFailedError: method 'boom' (from plugin ")
    assert "RuntimeError: boom on the mass sample" in failed[0].error and "attribute" in failed[0].traceback
    assert failed[0].metrics == {} and all(u.metrics["iou"] is not None for u in units if u.ok)



class _TwoSamples(Benchmark):
    name = "two-samples"
    summary = "A phantom and a sample whose image does not load."

    def samples(self, *, split=None, model=None):
        good = phantom_sample(HELD_OUT_START, "pleural_effusion")
        yield good

        def broken():
            raise ImageLoadError("cannot read /nowhere/x.dcm: no such file")

        yield replace(good, id="broken/1", index=1, load_image=broken)


class _TwoSamplesPlugin:
    __name__ = "TwoSamplesPlugin"

    @staticmethod
    @hookimpl
    def register_benchmarks(register):
        register(_TwoSamples())


def test_an_image_that_does_not_load_fails_only_its_units(tmp_path, registered_plugin):
    registered_plugin(_TwoSamplesPlugin)
    code, output = invoke("leaderboard", "-b", "two-samples", "-m", "phantom-gemma", "--methods", "center",
                          "--steps", "2", "--n-random", "2", "--fill", "zero", "--out", str(tmp_path))
    assert code == 0, output
    with open_store(tmp_path / "leaderboard.sqlite") as store:
        assert store.config().filter == "none"  # no exact counterfactuals: samples used as given
        units = list(store.units())
        samples = store.samples()
    status = sorted((u.sample_id, u.method, u.status) for u in units)
    good_id = phantom_sample(HELD_OUT_START, "pleural_effusion").id
    assert status == [("broken/1", prior, "error") for prior in PRIORS] + [(good_id, prior, "ok") for prior in PRIORS]
    assert {u.error for u in units if not u.ok} == {"ImageLoadError: cannot read /nowhere/x.dcm: no such file"}
    assert samples["broken/1"].image_size == (0, 0) and samples[good_id].image_size == (224, 224)
    assert {u.answer for u in units if u.ok} == {"Yes"}  # the model's own greedy answer

# -- bad input: one clear error each, before any work, nothing overwritten ----------------

@pytest.mark.parametrize("args, message", [
    (["-b", "phantm", "-m", "phantom-gemma"], "unknown benchmark 'phantm'. Did you mean 'phantom'?"),
    (["-b", "phantom", "-m", "phantom-gema"], "unknown model 'phantom-gema'. Did you mean 'phantom-gemma'"),
    (["-b", "phantom", "-m", "phantom-gemma", "--methods", "oclusion"],
     "unknown method 'oclusion'. Did you mean 'occlusion'"),
    (["-b", "phantom", "-m", "phantom-gemma", "--methods", "occlusion", "-p", "occlusion.tile=2"],
     "no parameter(s) 'tile'"),
    (["-b", "phantom", "-m", "phantom-gemma", "--shard", "3/2"], "shard 3/2 (from --shard) is invalid"),
    (["-b", "phantom", "-m", "phantom-gemma", "--shard", "two"], "is not of the form K/N"),
])
def test_bad_names_fail_before_any_work(tmp_path, args, message):
    code, output = invoke("leaderboard", *args, "--out", str(tmp_path / "out"))
    assert code == 1 and message in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    (b"not a database at all", "is not a SQLite file"),
    (None, f"schema version {SCHEMA_VERSION + 1}, newer"),
])
def test_a_bad_store_in_the_folder_is_refused(tmp_path, content, message):
    path = tmp_path / "leaderboard.sqlite"
    if content is None:
        code, _ = invoke(*SMALL, "--out", str(tmp_path))
        assert code == 0
        with sqlite3.connect(path) as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    code, output = invoke(*SMALL, "--out", str(tmp_path), "--resume")
    assert code == 1 and message in output
    assert path.read_bytes() == before


def test_another_run_in_the_folder_is_refused(tmp_path):
    code, _ = invoke(*SMALL, "--out", str(tmp_path))
    assert code == 0
    before = (tmp_path / "leaderboard.sqlite").read_bytes()
    code, output = invoke(*SMALL, "--seed", "1", "--out", str(tmp_path), "--resume")
    assert code == 1 and "already holds a different leaderboard run" in output and "seed: 1 != 0" in output
    code, output = invoke(*SMALL, "--out", str(tmp_path))
    assert code == 1 and "pass --resume" in output
    assert (tmp_path / "leaderboard.sqlite").read_bytes() == before


def test_merging_different_runs_is_refused(tmp_path):
    for seed in ("0", "1"):
        code, _ = invoke(*SMALL, "--seed", seed, "--out", str(tmp_path / seed))
        assert code == 0
    code, output = invoke("merge", str(tmp_path / "m.sqlite"), str(tmp_path / "0" / "leaderboard.sqlite"),
                          str(tmp_path / "1" / "leaderboard.sqlite"))
    assert code == 1 and "different runs (seed: 1 != 0)" in output
    assert not (tmp_path / "m.sqlite").exists() and not list(tmp_path.glob(".m.sqlite*"))
    code, output = invoke("merge", str(tmp_path / "0" / "leaderboard.sqlite"), str(tmp_path / "1" / "leaderboard.sqlite"))
    assert code == 1 and "refusing to overwrite" in output


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("keep me")
    code, output = invoke(*RUN, "--out", str(tmp_path / "out"))
    assert code == 1 and "is a file; expected a folder" in output
    assert (tmp_path / "out").read_text() == "keep me"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, output = invoke(*RUN, "--out", str(out))
    finally:
        out.chmod(0o755)
    assert code == 1 and "is not a writable folder" in output
    assert list(out.iterdir()) == []


# -- sharding -------------------------------------------------------------------------------

@pytest.mark.parametrize("env, want", [
    ({}, (0, 1)),
    ({"RANK": "1", "WORLD_SIZE": "4", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, (1, 4)),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3)),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, (2, 3)),
    ({"SLURM_PROCID": "3", "SLURM_NTASKS": "8"}, (3, 8)),
])
def test_shard_from_the_launcher_environment(env, want):
    shard = resolve_shard(None, env)
    assert (shard.index, shard.count) == want
    assert resolve_shard("1/2", env) == Shard(1, 2)  # --shard wins


def test_shards_partition_the_groups_stably():
    keys = [sample_key(f"phantom/direct/x/{i}", "phantom-qwen", "direct") for i in range(3000)]
    owners = [[k for k in keys if Shard(i, 3).owns(k)] for i in range(3)]
    assert sum(map(len, owners)) == len(keys) and all(900 < len(o) < 1100 for o in owners)
    # the hash is SHA-256, so the assignment is fixed for all time (and across processes)
    assert sample_key("s", "m", "direct") == "3aae7f3c5e198d77bef58dca0b2911c991eee18fa7d21d604be85ed84cda9cd1"


@pytest.mark.parametrize("text", ["3/2", "2/2", "-1/2", "0/0", "1", "a/b"])
def test_bad_shard_specs(text):
    with pytest.raises(ShardError, match="K/N"):
        parse_shard(text)


def test_the_documented_phantom_leaderboard_command_runs(tmp_path):
    """docs/leaderboard.md's command, shrunk to one sample and the priors, runs as written."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "leaderboard.md").read_text()
    block = doc.split("## The phantom leaderboard", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    args = block.replace("\\\n", " ").split()
    assert args[:2] == ["cxr-attrib", "leaderboard"] and "--methods" not in args
    args[args.index("--out") + 1] = str(tmp_path)
    code, output = invoke(*args[1:], "--limit", "1", "--methods", "center", "--steps", "2", "--n-random", "2")
    assert code == 0, output
    with open_store(tmp_path / "leaderboard.sqlite") as store:
        config = store.config()
        assert config.models == ("phantom-qwen", "phantom-gemma") and config.filter == "exact"
        assert config.per_finding == 16 and len(list(store.units())) == 2 * len(PRIORS)  # 2 models x priors


def test_device_follows_local_rank_only_with_cuda(monkeypatch):
    import torch

    from cxr_attrib.leaderboard.shard import device_from_env

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_from_env({"LOCAL_RANK": "1"}) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert device_from_env({"LOCAL_RANK": "1"}) == "cuda:1"
    assert device_from_env({"LOCAL_RANK": "5"}) == "cuda:1"  # more ranks than GPUs on the node: wrap
    assert device_from_env({}) is None
