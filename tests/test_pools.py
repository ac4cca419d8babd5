"""Concept pools: the on-disk format, validation, the hook, the phantom pool, the builders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cxr_attrib import hookimpl, registry
from cxr_attrib.cli import cli
from cxr_attrib.errors import DataError, UnknownPoolError
from cxr_attrib.pool_build import IMAGENOME_REGIONS, folder_references, scene_graph_references
from cxr_attrib.pools import (
    COMPOSITES,
    CONCEPTS,
    MANIFEST,
    ConceptPool,
    PoolError,
    PoolReference,
    load_pool,
    mask_box,
    write_pool,
)
from cxr_attrib_phantom import generate_phantom
from cxr_attrib_phantom.vqa import reference_seeds
from cxr_attrib_phantom.pool import phantom_pool


def _reference(ref_id: str = "r0", shape: tuple[int, int] = (20, 30)) -> PoolReference:
    """A reference whose concept k covers column k of a gradient image."""
    image = np.linspace(0, 1, shape[0] * shape[1], dtype=np.float32).reshape(shape)
    masks = {}
    for k, name in enumerate(CONCEPTS):
        mask = np.zeros(shape, bool)
        mask[k : k + 3, k + 1 : k + 5] = True
        masks[name] = mask
    return PoolReference(ref_id, image, masks)


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    return write_pool(tmp_path / "pool", "toy", [_reference("a"), _reference("b/with slash")])


def test_concepts_and_composites_are_defined_once():
    import cxr_attrib_phantom

    assert len(CONCEPTS) == 11 and len(set(CONCEPTS)) == 11
    assert cxr_attrib_phantom.CONCEPTS is CONCEPTS and cxr_attrib_phantom.COMPOSITES is COMPOSITES
    assert {m for pair in COMPOSITES.values() for m in pair} <= set(CONCEPTS)
    assert set(IMAGENOME_REGIONS) == set(CONCEPTS)


def test_mask_box_is_exclusive_and_none_when_empty():
    mask = np.zeros((6, 7), bool)
    assert mask_box(mask) is None
    mask[2, 3] = True
    mask[4, 5] = True
    assert mask_box(mask) == (3.0, 2.0, 6.0, 5.0)


def test_write_then_load_round_trips_lazily(pool_dir: Path, monkeypatch):
    manifest = json.loads((pool_dir / MANIFEST).read_text())
    assert manifest["format"] == "cxr-attrib-concept-pool" and manifest["concepts"] == list(CONCEPTS)
    reads = []
    import cxr_attrib.pools as pools_module

    real = pools_module.load_image
    monkeypatch.setattr(pools_module, "load_image", lambda p: reads.append(p) or real(p))
    pool = load_pool(pool_dir)
    assert pool.name == "toy" and pool.ids == ("a", "b/with slash") and reads == []
    original = _reference("b/with slash")
    loaded = pool[1]
    assert len(reads) == 12  # one image + 11 masks, only for the reference asked for
    assert np.abs(loaded.image - original.image).max() <= 0.5 / 255 + 1e-6
    for name in CONCEPTS:
        assert np.array_equal(loaded.masks[name], original.masks[name])
    assert pool[1] is loaded and len(reads) == 12  # kept, not read again


def test_fingerprint_follows_the_manifest(pool_dir: Path, tmp_path: Path):
    other = write_pool(tmp_path / "other", "toy", [_reference("a")])
    assert load_pool(pool_dir).fingerprint == load_pool(pool_dir).fingerprint
    assert load_pool(pool_dir).fingerprint != load_pool(other).fingerprint


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format="zip"), "field 'format'"),
        (lambda m: m.update(version=9), "field 'version'"),
        (lambda m: m.update(references=[]), "field 'references'"),
        (lambda m: m.update(concepts=m["concepts"][:-1]), "misses right_costophrenic_angle"),
        (lambda m: m["references"][0]["masks"].pop("left_hilar"), "no mask file for left_hilar"),
        (lambda m: m["references"][0].update(id=7), r"references\[0\].id"),
        (lambda m: m["references"][1].update(id="a"), "duplicate reference ids"),
        (lambda m: m["references"][0].update(image="../../etc/passwd"), "outside the pool folder"),
    ],
)
def test_malformed_manifest_is_named(pool_dir: Path, edit, message):
    manifest = json.loads((pool_dir / MANIFEST).read_text())
    edit(manifest)
    (pool_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PoolError, match=message):
        load_pool(pool_dir).validate()


def test_unreadable_and_missing_manifest(pool_dir: Path, tmp_path: Path):
    (pool_dir / MANIFEST).write_text("{not json")
    with pytest.raises(PoolError, match="malformed JSON"):
        load_pool(pool_dir)
    with pytest.raises(PoolError, match="no manifest.json"):
        load_pool(tmp_path / "nothing")


def test_mask_size_mismatch_and_empty_mask_are_caught_on_read(pool_dir: Path):
    manifest = json.loads((pool_dir / MANIFEST).read_text())
    masks = manifest["references"][0]["masks"]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(pool_dir / masks["mediastinum"])
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(pool_dir / masks["left_lung"])
    pool = load_pool(pool_dir)
    with pytest.raises(PoolError, match="mask 'left_lung' is empty"):
        pool[0]
    Image.fromarray(np.full((20, 30), 255, np.uint8)).save(pool_dir / masks["left_lung"])
    with pytest.raises(PoolError, match=r"mask 'mediastinum' has shape \(5, 5\).*\(20, 30\)"):
        load_pool(pool_dir)[0]


def test_reference_validation_names_the_concept():
    good = _reference()
    masks = dict(good.masks)
    masks.pop("upper_mediastinum")
    with pytest.raises(PoolError, match="no mask for concept.*upper_mediastinum"):
        PoolReference("x", good.image, masks)
    with pytest.raises(PoolError, match="has no references"):
        ConceptPool("empty", [], lambda i: good, "f")
    with pytest.raises(PoolError, match="pool name"):
        ConceptPool("Bad Name", ["x"], lambda i: good, "f")


def test_write_refuses_the_data_root_and_an_existing_pool(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("CXR_ATTRIB_DATA", str(data))
    with pytest.raises(DataError, match="inside the data folder"):
        write_pool(data / "pools" / "mine", "mine", [_reference()])
    assert not (data / "pools").exists()
    write_pool(tmp_path / "p", "mine", [_reference()])
    with pytest.raises(PoolError, match="already holds a concept pool"):
        write_pool(tmp_path / "p", "mine", [_reference()])


def test_phantom_pool_is_registered_lazy_and_exact():
    pool = registry.get_pool("phantom")
    assert len(pool) == 16 and pool.name == "phantom"
    seeds = reference_seeds(16)
    assert pool.ids == tuple(f"phantom-{s}" for s in seeds)
    phantom = generate_phantom(seeds[3])
    assert np.array_equal(pool[3].image, phantom.image)
    assert all(np.array_equal(pool[3].masks[c], phantom.masks[c]) for c in CONCEPTS)
    assert phantom_pool().fingerprint == pool.fingerprint != phantom_pool(seed=1).fingerprint
    assert "phantom" in registry.pools()


def test_unknown_pool_name_suggests_the_closest():
    with pytest.raises(UnknownPoolError) as info:
        registry.get_pool("phantm")
    assert info.value.suggestions == ["phantom"] and "Did you mean 'phantom'?" in str(info.value)


def test_hook_register_pools(registered_plugin, tmp_path: Path):
    folder = write_pool(tmp_path / "p", "site_pool", [_reference()])

    class SitePools:
        __name__ = "SitePools"

        @staticmethod
        @hookimpl
        def register_pools(register):
            register(load_pool(folder))

    name = registered_plugin(SitePools)
    assert registry.get_pool("site_pool").ids == ("r0",)
    assert next(i for i in registry.plugin_report() if i.name == name).registered["pools"] == ["site_pool"]


def test_hook_register_pools_rejects_other_objects(registered_plugin):
    class Broken:
        __name__ = "Broken"

        @staticmethod
        @hookimpl
        def register_pools(register):
            register({"not": "a pool"}, name="broken")

    name = registered_plugin(Broken)
    assert "broken" not in registry.pools()
    errors = next(i for i in registry.plugin_report() if i.name == name).errors
    assert "is not a cxr_attrib.pools.ConceptPool" in errors[0].reason


# ------------------------------------------------------------------- builders


def _scene_graph(path: Path, image_id: str, boxes: dict[str, tuple[float, ...]]) -> None:
    objects = [{"bbox_name": "right upper lung zone", "original_x1": 0, "original_y1": 0,
                "original_x2": 1, "original_y2": 1}]
    for concept, box in boxes.items():
        objects.append({"object_id": f"{image_id}_{concept}", "bbox_name": IMAGENOME_REGIONS[concept],
                        **dict(zip(("original_x1", "original_y1", "original_x2", "original_y2"), box))})
    path.write_text(json.dumps({"image_id": image_id, "objects": objects}))


def test_scene_graph_builder_makes_box_masks(tmp_path: Path):
    graphs, images = tmp_path / "graphs", tmp_path / "images" / "nested"
    graphs.mkdir()
    images.mkdir(parents=True)
    boxes = {c: (2.0 + k, 3.0, 10.5 + k, 12.0) for k, c in enumerate(CONCEPTS)}
    _scene_graph(graphs / "img1_SceneGraph.json", "img1", boxes)
    Image.fromarray(np.full((40, 30), 100, np.uint8)).save(images / "img1.jpg")
    [ref] = scene_graph_references(graphs, tmp_path / "images")
    assert ref.id == "img1" and ref.image.shape == (40, 30)
    # pixel centres c + 0.5 inside [x1, x2) x [y1, y2): columns 2..9 for [2, 10.5), rows 3..11
    assert mask_box(ref.masks["cardiac_silhouette"]) == (2.0, 3.0, 10.0, 12.0)
    assert mask_box(ref.masks["right_costophrenic_angle"]) == (12.0, 3.0, 20.0, 12.0)


def test_scene_graph_builder_names_a_missing_region_and_image(tmp_path: Path):
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    boxes = {c: (2.0, 3.0, 10.0, 12.0) for c in CONCEPTS if c != "left_hilar"}
    _scene_graph(graphs / "img1_SceneGraph.json", "img1", boxes)
    with pytest.raises(PoolError, match="no box for region.*'left hilar structures'"):
        list(scene_graph_references(graphs, tmp_path))
    _scene_graph(graphs / "img1_SceneGraph.json", "img1", {c: (2.0, 3.0, 10.0, 12.0) for c in CONCEPTS})
    with pytest.raises(PoolError, match="no image img1"):
        list(scene_graph_references(graphs, tmp_path))
    with pytest.raises(PoolError, match="for image id.*img2"):
        list(scene_graph_references(graphs, tmp_path, ids=["img2"]))


def _mask_folder(root: Path, ids: list[str], drop: str | None = None) -> Path:
    for ref_id in ids:
        ref = _reference(ref_id)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(ref.image * 255).astype(np.uint8)).save(root / "images" / f"{ref_id}.png")
        for name in CONCEPTS:
            if name != drop:
                (root / "masks" / ref_id).mkdir(parents=True, exist_ok=True)
                Image.fromarray(ref.masks[name].astype(np.uint8) * 255).save(root / "masks" / ref_id / f"{name}.png")
    return root


def test_folder_builder_reads_every_mask_and_names_a_missing_one(tmp_path: Path):
    refs = list(folder_references(_mask_folder(tmp_path / "src", ["b", "a"])))
    assert [r.id for r in refs] == ["a", "b"]
    assert np.array_equal(refs[0].masks["left_lung"], _reference().masks["left_lung"])
    with pytest.raises(PoolError, match=r"missing mask .*c[/\\]mediastinum.png"):
        list(folder_references(_mask_folder(tmp_path / "bad", ["c"], drop="mediastinum")))


def test_cli_pool_build_check_and_list(tmp_path: Path, monkeypatch):
    source = _mask_folder(tmp_path / "src", ["a", "b"])
    runner = CliRunner()
    out = tmp_path / "built"
    result = runner.invoke(cli, ["pool", "build", "--from-folder", str(source), "--name", "site", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 references" in result.output and load_pool(out).ids == ("a", "b")
    result = runner.invoke(cli, ["pool", "check", str(out)])
    assert result.exit_code == 0 and "ok" in result.output
    result = runner.invoke(cli, ["pool", "list"])
    assert result.exit_code == 0 and "phantom" in result.output
    inside = runner.invoke(cli, ["pool", "build", "--from-folder", str(source), "--name", "x",
                                 "--out", str(source / "pool")])
    assert inside.exit_code == 1 and "inside the data folder" in inside.output
    monkeypatch.setenv("CXR_ATTRIB_DATA", str(tmp_path))
    refused = runner.invoke(cli, ["pool", "build", "--from-folder", str(source), "--name", "x",
                                  "--out", str(tmp_path / "elsewhere")])
    assert refused.exit_code == 1 and "never written to" in refused.output
    both = runner.invoke(cli, ["pool", "build", "--name", "x", "--out", str(out)])
    assert both.exit_code == 2 and "exactly one of" in both.output


def test_phantom_masks_build_a_pool_that_round_trips(tmp_path: Path):
    phantom = generate_phantom(5)
    folder = write_pool(tmp_path / "p", "one", [PoolReference("p5", phantom.image, phantom.masks)])
    loaded = load_pool(folder)[0]
    assert all(np.array_equal(loaded.masks[c], phantom.masks[c]) for c in CONCEPTS)


def test_cli_builds_from_scene_graphs_with_an_id_list(tmp_path: Path):
    graphs, images = tmp_path / "graphs", tmp_path / "images"
    graphs.mkdir()
    images.mkdir()
    for image_id in ("n1", "n2", "sick"):
        _scene_graph(graphs / f"{image_id}_SceneGraph.json", image_id,
                     {c: (1.0 + k, 2.0, 9.0 + k, 20.0) for k, c in enumerate(CONCEPTS)})
        Image.fromarray(np.full((32, 24), 120, np.uint8)).save(images / f"{image_id}.png")
    (tmp_path / "normal.txt").write_text("n2\nn1\n\n")
    out = tmp_path / "pool"
    result = CliRunner().invoke(cli, ["pool", "build", "--from-scene-graphs", str(graphs), "--images", str(images),
                                      "--ids", str(tmp_path / "normal.txt"), "--name", "ig", "--out", str(out)])
    assert result.exit_code == 0, result.output
    pool = load_pool(out)
    assert pool.ids == ("n2", "n1") and mask_box(pool[0].masks["left_lung"]) == (2.0, 2.0, 10.0, 20.0)
