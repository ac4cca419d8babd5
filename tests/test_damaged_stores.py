"""Damaged stores get one clear error naming the store, the table and the row; wrong types a TypeError naming the parameter."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest
from test_leaderboard_store import CONFIG, _sample, _unit

from cxr_attrib.leaderboard import Store, StoreError, open_store


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store.create(path, CONFIG, "0/1") as store:
        store.add_sample(_sample())
        store.add_unit(_unit())
    return path


def _damage(path, statement, *args):
    with sqlite3.connect(path) as db:
        db.execute(statement, args)
    db.close()


def _read_all(path):
    with open_store(path) as store:
        store.config()
        list(store.units())
        list(store.filter_outcomes())


@pytest.mark.parametrize("column", ["metrics", "params", "passes", "boxes"])
def test_broken_json_in_a_unit_names_the_store_table_and_row(store_path, column):
    _damage(store_path, f"UPDATE units SET {column} = ?", "{not json")
    uid = _unit().unit_id
    with pytest.raises(StoreError, match=rf"store .*s\.sqlite: table 'units', row '{uid}' is damaged"):
        _read_all(store_path)


def test_broken_config_names_the_meta_row(store_path):
    _damage(store_path, "UPDATE meta SET value = ? WHERE key = 'config'", "[1, 2")
    with pytest.raises(StoreError, match=r"table 'meta', row 'config' is damaged"):
        _read_all(store_path)


@pytest.mark.parametrize("version, words", [("abc", "invalid store schema version 'abc'"),
                                            ("99", "schema version 99, newer than")])
def test_a_wrong_schema_version_is_named(store_path, version, words):
    _damage(store_path, "UPDATE meta SET value = ? WHERE key = 'schema_version'", version)
    with pytest.raises(StoreError, match=words):
        open_store(store_path)


def test_a_missing_table_is_named(store_path):
    _damage(store_path, "DROP TABLE units")
    with pytest.raises(StoreError, match="lacks the table.*units"):
        open_store(store_path)


def test_impossible_sizes_are_named(store_path):
    _damage(store_path, "UPDATE samples SET height = -5")
    with pytest.raises(StoreError, match=r"table 'samples', row 's1' is damaged \(impossible image size -5 x 112\)"):
        _read_all(store_path)


def test_a_heatmap_claiming_more_than_it_holds_is_named(store_path):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    _damage(store_path, "UPDATE units SET heatmap = ?", buffer.getvalue() + b"\0" * 16)
    with pytest.raises(StoreError, match=r"table 'units', row .* is damaged \(a stored heatmap claims shape"):
        _read_all(store_path)


@pytest.mark.parametrize("arguments, name", [
    ((42, np.zeros((8, 8), np.uint8), "q?"), "model"),
    (("m", 3.5, "q?"), "image"),
    (("m", np.zeros((8, 8), np.uint8), b"q?"), "question"),
    (("m", np.zeros((8, 8), np.uint8), "q?", 7), "method"),
])
def test_wrong_types_are_a_type_error_naming_the_parameter(arguments, name):
    from cxr_attrib import attribute

    with pytest.raises(TypeError, match=rf"attribute\(\): {name} must be .*, got (int|float|bytes)"):
        attribute(*arguments)


def test_compare_refuses_wrong_types_before_anything_loads():
    from cxr_attrib.comparison import compare

    with pytest.raises(TypeError, match=r"compare\(\): model must be .*, got int 42"):
        compare(42, np.zeros((8, 8), np.uint8), "q?")
