"""The leaderboard store: round trip, refusals, one row per unit."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from cxr_attrib.leaderboard import RunConfig, SampleRecord, Store, StoreError, UnitRecord, open_store, unit_id
from cxr_attrib.leaderboard.store import SCHEMA_VERSION, heatmap_thumbnail, image_thumbnail

CONFIG = RunConfig("phantom", "direct", ("phantom-gemma",), ("center", "occlusion"),
                   params={"center": {"fraction": 0.5}, "occlusion": {"tiles": 2}})


CURVES = {"fractions": [0.0, 0.5, 1.0], "deletion": [-0.1, -2.5, -3.0], "insertion": [-3.0, -0.2, -0.1],
          "random": [-0.1, -1.0, -3.0], "region_original": -0.1, "region_top": -2.0, "region_random": [-0.3]}


def _unit(sample: str = "s1", method: str = "occlusion", **changes) -> UnitRecord:
    params = CONFIG.params[method]
    fields = dict(
        unit_id=unit_id(sample, "phantom-gemma", method, params, "direct", 0), sample_id=sample,
        model="phantom-gemma", method=method, params=params, mode="direct", seed=0, status="ok",
        answer="Yes <script>", boxes=np.array([[1.0, 2.0, 30.5, 40.0]]), metrics={"iou": 0.25, "pointing_game": True,
                                                                               "energy": float("nan")},
        heatmap=heatmap_thumbnail(np.arange(224 * 112, dtype=np.float32).reshape(224, 112)),
        wall_time_s=1.5, passes={"forward_calls": 1}, versions={"torch": "x"}, worker="h:1:0/1", finished_at=3.0,
        curves=CURVES,
    )
    fields.update(changes)
    return UnitRecord(**fields)


def _sample(sample: str = "s1") -> SampleRecord:
    return SampleRecord(sample, "phantom", 7, "nodule", "Is there evidence of nodule in the image?", "direct",
                        np.array([[10.0, 20.0, 30.0, 40.0]]), (224, 112),
                        image_thumbnail(np.full((224, 112), 200, dtype=np.uint8)))


def test_round_trip_keeps_every_field(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store.create(path, CONFIG, "0/1") as store:
        store.add_sample(_sample())
        store.add_unit(_unit())
        store.add_unit(_unit(method="center", status="error", error="ValueError: boom", metrics={}))
    with open_store(path) as store:
        assert store.config() == CONFIG and store.shard == "0/1" and store.schema_version == SCHEMA_VERSION
        units = {u.method: u for u in store.units()}
        sample = store.samples(thumbnails=True)["s1"]
    ok = units["occlusion"]
    assert ok == _unit(metrics=ok.metrics)  # key, status, answer, times, passes, versions
    assert ok.metrics == {"iou": 0.25, "pointing_game": True, "energy": None}
    np.testing.assert_array_equal(ok.boxes, [[1.0, 2.0, 30.5, 40.0]])
    # 224 x 112 shrinks by 64/224 to 64 x 32, each value the mean of a 3.5 x 3.5 block
    assert ok.heatmap.shape == (64, 32) and ok.heatmap.dtype == np.float32
    assert ok.sample == sample and ok.as_row()["dataset"] == "phantom" and ok.as_row()["iou"] == 0.25
    assert sample.thumbnail.shape == (128, 64) and np.all(sample.thumbnail == 200)
    assert units["center"].status == "error" and units["center"].error == "ValueError: boom"
    assert ok.curves == CURVES  # the raw log-prob curves (nats)


def test_a_version_1_store_reads_without_curves(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store.create(path, CONFIG, "0/1") as store:
        store.add_sample(_sample())
        store.add_unit(_unit())
    with sqlite3.connect(path) as db:  # what a version 1 writer left: no curves column
        db.execute("ALTER TABLE units DROP COLUMN curves")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with open_store(path) as store:
        (unit,) = store.units()
    assert unit.curves is None and unit.metrics["iou"] == 0.25


def test_a_unit_is_never_recorded_twice(tmp_path):
    with Store.create(tmp_path / "s.sqlite", CONFIG, "0/1") as store:
        store.add_unit(_unit())
        with pytest.raises(StoreError, match="never recorded twice"):
            store.add_unit(_unit(wall_time_s=9.0))
        assert store.counts() == {"ok": 1, "error": 0}


def test_refuses_to_overwrite_an_existing_file(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"precious")
    with pytest.raises(StoreError, match="refusing to overwrite"):
        Store.create(path, CONFIG, "0/1")
    assert path.read_bytes() == b"precious"


def test_a_store_appears_only_complete(tmp_path, monkeypatch):
    """Another shard scanning the folder never meets a half-made store (a real race under torchrun)."""
    import os

    path, seen = tmp_path / "shard-0-of-2.sqlite", []
    real_link = os.link

    def link(source, target, **options):
        assert not path.exists() and sorted(p.name for p in tmp_path.glob("*.sqlite")) == []
        with sqlite3.connect(f"file:{source}?immutable=1", uri=True) as building:  # already whole
            seen.append(dict(building.execute("SELECT key, value FROM meta"))["config_digest"])
        real_link(source, target, **options)

    monkeypatch.setattr(os, "link", link)
    with Store.create(path, CONFIG, "0/2") as store:
        store.add_unit(_unit())
    assert seen == [CONFIG.digest] and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with open_store(path) as store:
        assert store.counts() == {"ok": 1, "error": 0}


def test_not_sqlite_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("hello, I am text")
    with pytest.raises(StoreError, match="not a SQLite file"):
        open_store(path)
    assert path.read_text() == "hello, I am text"


def test_foreign_sqlite_file_is_a_clear_error(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    with pytest.raises(StoreError, match="not a cxr-attrib leaderboard store"):
        open_store(path)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    Store.create(path, CONFIG, "0/1").close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        open_store(path)


def test_reader_cannot_write(tmp_path):
    path = tmp_path / "s.sqlite"
    Store.create(path, CONFIG, "0/1").close()
    with open_store(path) as store, pytest.raises(StoreError, match="read-only"):
        store.add_unit(_unit())


def test_closed_store_is_one_file(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store.create(path, CONFIG, "0/1") as store:
        store.add_unit(_unit())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]


def test_config_digest_tracks_every_field():
    other = RunConfig(**{**CONFIG.__dict__, "seed": 1})
    assert other.digest != CONFIG.digest and "seed: 1 != 0" in other.describe_difference(CONFIG)
    assert RunConfig.from_dict(CONFIG.to_dict()).digest == CONFIG.digest
