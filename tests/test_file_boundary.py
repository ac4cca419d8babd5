"""The file boundary's guarantees, on the boundary itself and on every surface that uses it.

Reads (:mod:`cxr_attrib.safeio`): regular files only, null bytes refused, byte and
decompression budgets. Writes (:mod:`cxr_attrib.outputs`): no symlink followed below
the named folder, nothing half-written, never inside ``$CXR_ATTRIB_DATA``. SQLite and
the shard lock. Each output option of the CLI refuses the data root.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cxr_attrib.cli import cli
from cxr_attrib.errors import DataError, FileInUseError, OutputError, UnreadableFileError
from cxr_attrib.outputs import write_files
from cxr_attrib.safeio import (building_sqlite, connect_sqlite, exclusive_lock, load_npy, load_npz, open_regular,
                               read_bytes, read_json, read_text)

# -- reads ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", [read_bytes, read_text, read_json, load_npz, lambda p: connect_sqlite(
    p, writable=False)])
def test_every_reader_refuses_a_fifo_without_blocking(tmp_path, reader):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(UnreadableFileError, match="is a FIFO"):
        reader(fifo)


def test_a_fifo_swapped_in_after_the_check_is_refused_on_the_descriptor(tmp_path, monkeypatch):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    regular, real_stat = os.stat(__file__), os.stat
    monkeypatch.setattr("cxr_attrib.safeio.os.stat", lambda p, **k: regular if Path(p) == fifo else real_stat(p, **k))
    with pytest.raises(UnreadableFileError, match="is a FIFO"):
        read_bytes(fifo)


def test_devices_folders_missing_and_null_bytes_are_named(tmp_path):
    with pytest.raises(UnreadableFileError, match="is a device file"):
        read_bytes("/dev/zero")
    with pytest.raises(UnreadableFileError, match="is a folder"):
        read_bytes(tmp_path)
    with pytest.raises(UnreadableFileError, match="no such file"):
        read_bytes(tmp_path / "absent.json")
    with pytest.raises(UnreadableFileError, match="null byte"):
        read_bytes(str(tmp_path / "a\x00b"))
    with pytest.raises(TypeError, match="result file must be a str or os.PathLike path, got int"):
        read_text(42, what="result file")


def test_the_byte_budget_is_checked_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "big.json"
    big.write_bytes(b"[" + b"0," * 600 + b"0]")
    with pytest.raises(UnreadableFileError, match=r"1,203 bytes, over the budget of 1,000 bytes"):
        read_json(big, max_bytes=1000)
    assert read_json(big, max_bytes=2000) == [0] * 601


def test_bad_json_and_bad_encoding_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n  oops}')
    with pytest.raises(UnreadableFileError, match=r"bad.json.*not valid JSON.*line 2 column 3"):
        read_json(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(UnreadableFileError, match="not UTF-8 text"):
        read_text(bad)


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_npz_total_budget_covers_all_arrays_together():
    # Each array alone (8 kB) is within a 10 kB budget; the two together (16 kB) are not.
    blob = _npz(a=np.zeros(1000), b=np.zeros(1000))
    with pytest.raises(UnreadableFileError, match="over all its arrays, over the budget of 10,000"):
        load_npz(blob, max_bytes=10_000)
    assert set(load_npz(blob, max_bytes=20_000)) == {"a", "b"}


def test_npz_compression_bomb_is_refused_without_decoding():
    # bzip2 packs 10 MB of zeros into ~50 bytes (ratio ~200,000); deflate can never exceed ~1032.
    buffer = io.BytesIO()
    payload = io.BytesIO()
    np.save(payload, np.zeros(10_000_000 // 8))
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("x.npy", payload.getvalue())
    with pytest.raises(UnreadableFileError, match="decompression bomb"):
        load_npz(buffer.getvalue())
    honest = _npz(x=np.zeros((224, 224), np.float32))  # an all-zero heatmap: deflate's best ratio
    assert load_npz(honest)["x"].shape == (224, 224)


def test_npy_header_claiming_more_than_it_holds_is_refused():
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (400_000_000,)}
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(np.zeros(4).tobytes())  # the header claims 3.2 GB; 32 bytes follow
    with pytest.raises(UnreadableFileError, match=r"claims shape \(400000000,\).*holds 32 bytes"):
        load_npy(buffer.getvalue())
    with pytest.raises(UnreadableFileError, match="not a .npy array"):
        load_npy(b"garbage")


# -- writes -----------------------------------------------------------------------------------------


def test_a_linked_sub_folder_below_the_named_folder_is_refused(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "thumbs").symlink_to(elsewhere)
    with pytest.raises(OutputError, match="symbolic link below the output folder"):
        write_files({out / "a.md": b"a", out / "thumbs" / "t.png": b"t"}, root=out)
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == ["thumbs"]


def test_a_planted_link_at_the_destination_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").symlink_to(victim)
    write_files({out / "report.md": b"new"}, root=out)
    assert victim.read_text() == "precious" and not (out / "report.md").is_symlink()
    assert (out / "report.md").read_bytes() == b"new"


def test_temporary_names_are_unpredictable_and_exclusive(tmp_path, monkeypatch):
    """A file planted under every name tried is never opened: the write fails cleanly."""
    import cxr_attrib.outputs as outputs

    monkeypatch.setattr(outputs.secrets, "token_hex", lambda n: "planted")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / ".a.json.planted.tmp").symlink_to(victim)
    with pytest.raises(OutputError, match="fresh names were all taken"):
        write_files({tmp_path / "a.json": b"{}"})
    assert victim.read_text() == "precious" and not (tmp_path / "a.json").exists()


def test_writes_refuse_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_ATTRIB_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError, match="inside the data folder"):
        write_files({tmp_path / "data" / "sub" / "x.json": b"{}"})
    assert not (tmp_path / "data").exists()


# -- SQLite and the shard lock ----------------------------------------------------------------------


def test_building_sqlite_links_only_a_complete_file(tmp_path):
    path = tmp_path / "s.sqlite"
    with pytest.raises(RuntimeError):
        with building_sqlite(path) as db:
            db.execute("CREATE TABLE t (x)")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with building_sqlite(path) as db:
        db.execute("CREATE TABLE t (x)")
    assert [p.name for p in tmp_path.iterdir()] == ["s.sqlite"]
    with pytest.raises(OutputError, match="already exists"):
        with building_sqlite(path):
            pass


def test_a_second_holder_of_the_lock_is_refused_at_once(tmp_path):
    store = tmp_path / "shard-0-of-2.sqlite"
    with exclusive_lock(store, what="leaderboard store"):
        with pytest.raises(FileInUseError, match="in use by another process"):
            with exclusive_lock(store):
                pass
    with exclusive_lock(store):  # released on exit
        pass


def test_a_second_leaderboard_process_on_the_same_shard_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with exclusive_lock(out / "leaderboard.sqlite"):  # another process running this shard
        result = CliRunner().invoke(cli, ["leaderboard", "-b", "phantom", "-m", "phantom-gemma", "--methods",
                                          "center", "--limit", "1", "--out", str(out)])
    assert result.exit_code == 1 and "in use by another process" in result.output
    assert not (out / "leaderboard.sqlite").exists()


# -- the data-root rule on every output option ------------------------------------------------------


def _store(path: Path) -> Path:
    from cxr_attrib.leaderboard import RunConfig, Store

    Store.create(path, RunConfig("phantom", "direct", ("phantom-gemma",), ("center",)), "0/1").close()
    return path


@pytest.mark.parametrize("command", ["attribute", "leaderboard", "merge", "report", "said-vs-used", "pool build"])
def test_every_output_option_refuses_the_data_root(tmp_path, monkeypatch, command):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    image = tmp_path / "x.png"
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(image)
    store = _store(tmp_path / "s.sqlite")
    masks = tmp_path / "masks"
    monkeypatch.setenv("CXR_ATTRIB_DATA", str(data))
    args = {
        "attribute": ["attribute", str(image), "-q", "Is there evidence of nodule in the image?", "-m", "x",
                      "--method", "center", "--answer", "Yes", "--out", str(data / "o.png")],
        "leaderboard": ["leaderboard", "-b", "phantom", "-m", "phantom-gemma", "--methods", "center", "--limit", "1",
                        "--out", str(data / "run")],
        "merge": ["merge", str(data / "m.sqlite"), str(store)],
        "report": ["report", str(store), "--out", str(data / "report")],
        "said-vs-used": ["said-vs-used", str(store), "--out", str(data / "said.md")],
        "pool build": ["pool", "build", "--from-folder", str(masks), "--name", "x", "--out", str(data / "pool")],
    }[command]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and "inside the data folder" in result.output, result.output
    assert sorted(p.name for p in data.iterdir()) == []


def test_the_transfer_cache_refuses_the_data_root(tmp_path, monkeypatch):
    from cxr_attrib_plugins.medfocus.cache import TransferCache

    monkeypatch.setenv("CXR_ATTRIB_DATA", str(tmp_path))
    with pytest.raises(DataError, match="inside the data folder"):
        TransferCache(tmp_path / "cache")


# -- concept pools ----------------------------------------------------------------------------------


def _pool_refs(value: float = 0.5, n: int = 2):
    from cxr_attrib.pools import CONCEPTS, PoolReference

    masks = {c: np.ones((8, 8), bool) for c in CONCEPTS}
    return [PoolReference(f"r{i}", np.full((8, 8), value, np.float32), masks) for i in range(n)]


def test_pool_fingerprint_covers_every_file_content(tmp_path):
    from cxr_attrib.pools import load_pool, write_pool

    write_pool(tmp_path / "p", "site", _pool_refs(0.5))
    before = load_pool(tmp_path / "p").fingerprint
    manifest = (tmp_path / "p" / "manifest.json").read_bytes()
    write_pool(tmp_path / "p", "site", _pool_refs(0.25), overwrite=True)  # same ids: same manifest, new images
    assert (tmp_path / "p" / "manifest.json").read_bytes() == manifest
    assert load_pool(tmp_path / "p").fingerprint != before


def test_a_failed_pool_build_leaves_no_file(tmp_path):
    from cxr_attrib.pools import write_pool

    def references():
        yield from _pool_refs()
        raise RuntimeError("the third reference cannot be read")

    with pytest.raises(RuntimeError):
        write_pool(tmp_path / "p", "site", references())
    assert not (tmp_path / "p").exists() or list((tmp_path / "p").rglob("*")) == []


def test_a_pool_file_that_is_a_fifo_is_refused(tmp_path):
    from cxr_attrib.pools import PoolError, load_pool, write_pool

    write_pool(tmp_path / "p", "site", _pool_refs())
    image = next((tmp_path / "p" / "images").iterdir())
    image.unlink()
    os.mkfifo(image)
    with pytest.raises(PoolError, match="is a FIFO"):
        load_pool(tmp_path / "p")


def test_open_regular_yields_a_readable_handle(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    with open_regular(path) as handle:
        assert handle.read() == b"abc"
