"""Concept transfer by unbalanced OT: the solver, the grids, the boxes, the frames, the cache."""

from __future__ import annotations

import json
import warnings

import numpy as np
import ot
import torch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cxr_attrib.errors import DataError, MethodParameterError, UnknownPoolError
from cxr_attrib.frames import ResizePad
from cxr_attrib.pools import CONCEPTS, ConceptPool, PoolReference, mask_box
from cxr_attrib.scoring.localisation import region_metrics
from cxr_attrib_phantom import generate_phantom, make_case
from cxr_attrib_plugins.medfocus import NoSupportError, TransferCache, TransportFailure, transfer_concepts
from cxr_attrib_plugins.medfocus.transfer import _cells_to_mask, _quantile_cells, members
from cxr_attrib_plugins.medfocus.transport import (
    GridMeasure,
    cell_edges,
    cost_matrix,
    downsample,
    grid_measure,
    solve_uot,
)


def _iou(a, b) -> float:
    return region_metrics(np.array([a], float), np.array([b], float)).iou


def _self_pool(image, masks, name="self") -> ConceptPool:
    return ConceptPool.from_references(name, [PoolReference("ref", image, masks)])


def _measure(cells, mass, grid) -> GridMeasure:
    mass = np.asarray(mass, float)
    return GridMeasure(grid, np.asarray(cells), mass / mass.sum())


# ----------------------------------------------------------------- grids, support, cost


def test_downsample_is_the_area_mean_of_uneven_cells():
    assert cell_edges(10, 3).tolist() == [0, 3, 6, 10]
    values = np.arange(100.0).reshape(10, 10)
    out = downsample(values, 3)
    # exact by construction: integer values sum exactly in any order, then one division
    assert out[0, 0] == values[0:3, 0:3].mean() and out[2, 2] == values[6:10, 6:10].mean()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_downsample_keeps_the_mean_when_cells_are_equal(cells, seed):
    size = cells * 3
    values = np.random.default_rng(seed).random((size, size))
    assert np.isclose(downsample(values, cells).mean(), values.mean())


def test_support_is_thresholded_capped_and_normalised():
    image = np.zeros((4, 4), np.float32)
    image[0, 0], image[1, 1], image[2, 2], image[3, 3] = 1.0, 0.5, 0.25, 0.01
    measure = grid_measure(image, 4)
    assert measure.cells.tolist() == [0, 5, 10]  # 0.01 is below the 0.02 threshold
    assert np.allclose(measure.mass, np.array([1.0, 0.5, 0.25]) / 1.75)
    capped = grid_measure(image, 4, max_cells=2)
    assert capped.cells.tolist() == [0, 5] and np.isclose(capped.mass.sum(), 1.0)
    assert capped.positions.tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_cost_is_squared_distance_over_its_90th_percentile():
    a = _measure([0, 1, 2], [1, 1, 1], 3)
    b = _measure([0, 4, 8], [1, 1, 1], 3)
    squared = ((a.positions[:, None, :] - b.positions[None, :, :]) ** 2).sum(-1)
    cost = cost_matrix(a, b)
    assert np.allclose(cost, squared / np.quantile(squared, 0.9))
    assert np.isclose(np.quantile(cost, 0.9), 1.0)


@pytest.mark.parametrize("image", [np.zeros((224, 224)), np.full((224, 224), 0.7)])
def test_blank_image_has_no_support(image):
    with pytest.raises(NoSupportError, match="no support|constant"):
        grid_measure(image, 14)


# ----------------------------------------------------------------------- the solver


def _small_problem():
    a = _measure([0, 1, 5, 7], [0.4, 0.3, 0.2, 0.1], 4)
    b = _measure([2, 6, 9, 12, 15], [0.1, 0.3, 0.2, 0.2, 0.2], 4)
    return a, b


def test_solver_is_pots_entropic_uot_not_its_kl_default():
    a, b = _small_problem()
    cost = cost_matrix(a, b)
    result = solve_uot(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        entropic = ot.unbalanced.sinkhorn_unbalanced(a.mass, b.mass, cost, 0.05, (0.1, 0.1), reg_type="entropy",
                                                     numItermax=500, stopThr=1e-6)
        kl = ot.unbalanced.sinkhorn_unbalanced(a.mass, b.mass, cost, 0.05, (0.1, 0.1), reg_type="kl",
                                               numItermax=500, stopThr=1e-6)
    assert np.allclose(result.plan, entropic, rtol=1e-10, atol=0)
    assert np.abs(kl - entropic).max() > 1e-2 * entropic.max()
    assert result.solver == "separable" and result.converged and result.backend == "numpy"
    assert np.isclose(result.cost, (result.plan * cost).sum(), rtol=1e-12)
    reference = solve_uot(a, b, solver="pot")
    assert reference.solver == "sinkhorn" and np.allclose(reference.plan, entropic, rtol=1e-12, atol=0)
    assert reference.iterations == result.iterations and np.isclose(reference.objective, result.objective, rtol=1e-12)


def test_objective_is_the_full_uot_objective_by_hand():
    a, b = _small_problem()
    result = solve_uot(a, b, epsilon=0.05, marginal=0.3)
    plan, cost = result.plan, cost_matrix(a, b)

    def kl(p, q):
        return float((p * np.log(p / q) - p + q).sum())

    expected = ((plan * cost).sum() + 0.05 * (plan * np.log(plan) - plan).sum()
                + 0.3 * kl(plan.sum(1), a.mass) + 0.3 * kl(plan.sum(0), b.mass))
    assert np.isclose(result.objective, expected, rtol=1e-9)


def test_small_epsilon_runs_in_the_log_domain_with_the_same_plan():
    a, b = _small_problem()
    scaling = solve_uot(a, b, epsilon=0.015, solver="separable")
    chosen = solve_uot(a, b, epsilon=0.015)
    pot = solve_uot(a, b, epsilon=0.015, solver="sinkhorn")
    assert chosen.solver == "separable_log" and chosen.converged and chosen.iterations == pot.iterations
    assert np.allclose(chosen.plan, pot.plan, rtol=1e-9, atol=0) and np.allclose(scaling.plan, pot.plan, rtol=1e-12, atol=0)
    # POT's own log-domain solver drifts once it absorbs at epsilon = 0.01 (a known upstream POT bug);
    # its reference path ("pot") therefore keeps the lower objective of its two solvers:
    drifted = solve_uot(a, b, epsilon=0.01, solver="sinkhorn_stabilized")
    assert not drifted.converged and drifted.plan.sum() > 1e6
    reference = solve_uot(a, b, epsilon=0.01, solver="pot")
    assert reference.solver == "sinkhorn"
    assert np.allclose(solve_uot(a, b, epsilon=0.01).plan, reference.plan, rtol=1e-9, atol=0)


def test_overflowing_scaling_iterations_hand_over_to_the_log_domain():
    """A 4x4 block and a far corner cell: the corner's cost is ~400x the 90th percentile, its kernel
    column underflows to 0 at epsilon 0.05 and the scaling iterations stop on it (POT's numerical rule)."""
    block = [r * 64 + c for r in range(4) for c in range(4)]
    a = _measure(block, np.ones(16), 64)
    b = _measure(block + [64 * 64 - 1], np.ones(17), 64)
    scaling = solve_uot(a, b, solver="separable")
    result = solve_uot(a, b)
    assert scaling.notes and not scaling.converged and "overflowed" in scaling.problem()
    assert result.solver == "separable_log" and "log-domain iterations took over" in result.notes[-1]
    assert np.isfinite(result.plan).all()


def test_torch_backend_gives_the_numpy_plan():
    a, b = _small_problem()
    on_torch = solve_uot(a, b, device="cpu")
    assert on_torch.backend == "torch:cpu"
    assert np.allclose(on_torch.plan, solve_uot(a, b).plan, rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"epsilon": 0.0}, "epsilon"), ({"marginal": -1.0}, "marginal"), ({"max_iter": 0}, "max_iter"),
     ({"solver": "exact"}, "solver"), ({"tol": float("nan")}, "tol"), ({"epsilon": 1e-4}, "supported range")],
)
def test_bad_solver_settings_are_named(kwargs, name):
    a, b = _small_problem()
    with pytest.raises(MethodParameterError, match=name):
        solve_uot(a, b, **kwargs)


# --------------------------------------------------------------------------- transfer


def test_quantile_cells_are_the_fewest_carrying_the_share():
    mass = np.array([0.1, 0.4, 0.0, 0.3, 0.2])
    assert sorted(_quantile_cells(mass, 0.75).tolist()) == [1, 3, 4]  # 0.4 + 0.3 < 0.75 <= 0.9
    assert sorted(_quantile_cells(mass, 0.7).tolist()) == [1, 3]
    assert sorted(_quantile_cells(mass, 1.0).tolist()) == [0, 1, 3, 4]  # never a zero-mass cell
    assert _quantile_cells(np.zeros(3), 0.75).size == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, allow_subnormal=False), min_size=1, max_size=30), st.floats(0.01, 1.0))
def test_quantile_cells_reach_the_share_and_no_cell_can_go(values, quantile):
    mass = np.asarray(values)
    kept = _quantile_cells(mass, quantile)
    total = mass.sum()
    if total == 0:
        assert kept.size == 0
        return
    assert mass[kept].sum() >= quantile * total * (1 - 1e-9)
    assert mass[kept].sum() - mass[kept].min() < quantile * total * (1 + 1e-9)  # minimal
    assert (mass[kept] > 0).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.sets(st.integers(0, 39 * 40 + 39), min_size=1, max_size=20))
def test_cell_masks_tile_the_frame_and_box_on_cell_edges(grid, flat):
    cells = np.array(sorted(c for c in flat if c < grid * grid) or [0])
    mask = _cells_to_mask(cells, grid, 224)
    edges = cell_edges(224, grid)
    rows, cols = np.divmod(cells, grid)
    assert mask_box(mask) == (edges[cols.min()], edges[rows.min()], edges[cols.max() + 1], edges[rows.max() + 1])
    widths = np.diff(edges)
    assert mask.sum() == sum(widths[r] * widths[c] for r, c in zip(rows, cols))


def test_identity_transfer_returns_every_exact_box():
    """Reference = the image itself: each concept lands on its own mask (IoU >= 0.9)."""
    phantom = generate_phantom(1000)
    result = transfer_concepts(phantom.image, _self_pool(phantom.image, phantom.masks), transfer="warp",
                               cache=TransferCache())
    ious = {c: _iou(result.boxes[c], mask_box(phantom.masks[c])) for c in CONCEPTS}
    assert min(ious.values()) >= 0.9, ious
    assert result.reference == 0 and result.info["untransferred"] == []
    for c in CONCEPTS:
        assert mask_box(result.masks[c]) == result.boxes[c]
        assert result.masks[c].shape == (224, 224) and result.masks[c].dtype == bool


def _translated(seed: int, dy: int, dx: int):
    """A 176-px phantom pasted into a 224 canvas at (24 + dy, 24 + dx): a pure translation."""
    phantom = generate_phantom(seed, size=176)
    image = np.zeros((224, 224), np.float32)
    image[24 + dy : 200 + dy, 24 + dx : 200 + dx] = phantom.image
    masks = {}
    for c in CONCEPTS:
        masks[c] = np.zeros((224, 224), bool)
        masks[c][24 + dy : 200 + dy, 24 + dx : 200 + dx] = phantom.masks[c]
    return image, masks


@pytest.mark.slow
def test_translation_is_recovered_better_with_a_stronger_marginal_penalty(capsys):
    """Reference shifted by (dx, dy) = (12, 8) px; the boxes should move back by it."""
    target, target_masks = _translated(7, 0, 0)
    reference, ref_masks = _translated(7, 8, 12)
    pool = _self_pool(reference, ref_masks, "shifted")
    recovered = {}
    for marginal in (0.1, 10.0):
        # lambda = 10 needs ~1,000 iterations to converge (a solve that does not is refused)
        result = transfer_concepts(target, pool, marginal=marginal, max_iter=5000, cache=TransferCache())
        moves = [np.subtract(_centre(result.boxes[c]), _centre(mask_box(ref_masks[c]))) for c in CONCEPTS]
        recovered[marginal] = np.median(moves, axis=0)
    with capsys.disabled():
        print(f"\nrecovered shift (dx, dy) px, truth (-12, -8): {recovered}")
    error = {m: np.abs(v - (-12, -8)).sum() for m, v in recovered.items()}
    assert error[10.0] < error[0.1]
    assert np.all(np.sign(recovered[10.0]) == -1)


def _centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


@pytest.mark.slow
def test_transfer_quality_on_held_out_phantoms(capsys):
    """16-phantom pool onto unseen phantoms: mean box IoU over concepts >= 0.5."""
    from cxr_attrib.registry import get_pool

    pool = get_pool("phantom")
    table = []
    for seed in (1000, 1001):
        phantom = generate_phantom(seed)
        result = transfer_concepts(phantom.image, pool, transfer="warp", cache=TransferCache())
        table.append([_iou(result.boxes[c], mask_box(phantom.masks[c])) for c in CONCEPTS])
    per_concept = np.mean(table, axis=0)
    with capsys.disabled():
        print("\n" + "\n".join(f"{c:26s} {v:.2f}" for c, v in zip(CONCEPTS, per_concept)))
    assert per_concept.mean() >= 0.5


def test_boxes_land_on_the_exact_finding_box_of_a_non_square_input():
    """Working-frame boxes mapped back with the core's ResizePad hit the input's own boxes."""
    case = make_case(11, "cardiomegaly")
    crop = np.s_[:, 40:190]  # a (224, 150) input image
    image = case.image[crop]
    masks = {c: case.masks[c][crop] for c in CONCEPTS}
    finding_box = mask_box(masks["cardiac_silhouette"])
    frame = ResizePad.for_image(image)
    working = frame.image_to_working(image)
    result = transfer_concepts(working, _self_pool(image, masks), transfer="warp", cache=TransferCache())
    heart = frame.boxes_to_input([result.boxes["cardiac_silhouette"]])[0]
    assert _iou(heart, finding_box) >= 0.9
    assert _iou(result.boxes["cardiac_silhouette"], finding_box) < 0.7  # the working frame is another frame
    case_box = case.boxes[0] - np.array([40, 0, 40, 0])
    assert _iou(heart, np.clip(case_box, 0, [150, 224, 150, 224])) >= 0.8


def test_paper_mode_boxes_are_cell_aligned_and_composites_keep_their_members():
    phantom = generate_phantom(3)
    result = transfer_concepts(phantom.image, _self_pool(phantom.image, phantom.masks), transfer_grid=28,
                               cache=TransferCache())
    edges = set(cell_edges(224, 28).tolist())
    assert all(set(result.boxes[c]) <= edges for c in CONCEPTS)
    assert members("bilateral_lungs") == ("left_lung", "right_lung")
    assert result.member_boxes("bilateral_lungs") == [result.boxes["left_lung"], result.boxes["right_lung"]]
    assert np.array_equal(result.member_mask("bilateral_hilar"), result.masks["left_hilar"] | result.masks["right_hilar"])
    with pytest.raises(MethodParameterError, match="unknown concept 'spleen'"):
        result.member_boxes("spleen")


# ------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def tiny_pool() -> ConceptPool:
    phantom = generate_phantom(2)
    return _self_pool(phantom.image, phantom.masks, "tiny")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"mass_quantile": 0.0}, r"mass_quantile must be in \(0, 1\], got 0.0"),
     ({"mass_quantile": 1.5}, r"mass_quantile must be in \(0, 1\]"),
     ({"selection": "best"}, "selection must be one of cost, objective"),
     ({"transfer": "magic"}, "transfer must be one of mass, warp"),
     ({"transfer_grid": 500}, r"transfer_grid must be an int in \[1, 224\]"),
     ({"epsilon": -0.1}, "epsilon must be a positive number")],
)
def test_bad_parameters_fail_before_any_work(tiny_pool, kwargs, message):
    with pytest.raises(MethodParameterError, match=message):
        transfer_concepts(np.zeros((224, 224), np.float32), tiny_pool, **kwargs)


def test_all_black_image_is_a_clear_error_never_a_nan_box(tiny_pool):
    with pytest.raises(NoSupportError, match="no support"):
        transfer_concepts(np.zeros((224, 224), np.float32), tiny_pool, cache=TransferCache())


def test_a_plan_that_moves_no_mass_is_a_transport_failure_never_boxes():
    """Reference mass in one corner, image mass in the other, a weak marginal penalty: nothing moves."""
    reference, image = np.zeros((224, 224), np.float32), np.zeros((224, 224), np.float32)
    reference[:16, :16], image[-16:, -16:] = 1.0, 1.0
    pool = _self_pool(reference, {c: reference > 0 for c in CONCEPTS}, "corner")
    with pytest.raises(TransportFailure, match="degenerate plan: it moves"):
        transfer_concepts(image, pool, marginal=0.01, cache=TransferCache())


def test_unknown_pool_name_and_bad_image_shape(tiny_pool):
    with pytest.raises(UnknownPoolError, match="Did you mean 'phantom'"):
        transfer_concepts(generate_phantom(1).image, "phantoms")
    with pytest.raises(MethodParameterError, match=r"square \(S, S\)"):
        transfer_concepts(np.ones((20, 30), np.float32), tiny_pool)


def test_a_black_pool_reference_is_named(tmp_path):
    image = np.zeros((64, 64), np.float32)
    masks = {c: np.ones((64, 64), bool) for c in CONCEPTS}
    pool = _self_pool(image, masks, "black")
    from cxr_attrib.pools import PoolError

    with pytest.raises(PoolError, match="reference 'ref' cannot be used"):
        transfer_concepts(generate_phantom(1).image, pool, cache=TransferCache())


# ---------------------------------------------------------------------------- cache


def test_cache_hits_by_content_and_keys_on_pool_and_params(tiny_pool):
    cache = TransferCache()
    image = generate_phantom(4).image
    first = transfer_concepts(image, tiny_pool, transfer_grid=28, cache=cache)
    again = transfer_concepts(image.copy(), tiny_pool, transfer_grid=28, cache=cache)
    assert again is first and (cache.hits, cache.misses) == (1, 1)
    transfer_concepts(image, tiny_pool, transfer_grid=28, mass_quantile=0.5, cache=cache)
    assert cache.misses == 2 and len(cache) == 2
    assert TransferCache.key(image, tiny_pool, {"a": 1}) != TransferCache.key(image, tiny_pool, {"a": 2})


def test_disk_cache_round_trips_without_pickle(tiny_pool, tmp_path):
    image = generate_phantom(4).image
    first = transfer_concepts(image, tiny_pool, transfer_grid=28, cache=TransferCache(tmp_path / "c"))
    files = sorted(p.suffix for p in (tmp_path / "c").iterdir())
    assert files == [".json", ".npz"]
    record = json.loads(next((tmp_path / "c").glob("*.json")).read_text())
    assert record["reference_id"] == "ref" and set(record["boxes"]) == set(CONCEPTS)
    fresh = TransferCache(tmp_path / "c")
    loaded = transfer_concepts(image, tiny_pool, transfer_grid=28, cache=fresh)
    assert fresh.hits == 1 and loaded.boxes == first.boxes and loaded.scores == first.scores
    assert all(np.array_equal(loaded.masks[c], first.masks[c]) for c in CONCEPTS)
    assert loaded.info["transfer_solver"] == json.loads(json.dumps(dict(first.info)["transfer_solver"]))


def test_disk_cache_refuses_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_ATTRIB_DATA", str(tmp_path))
    with pytest.raises(DataError, match="inside the data folder"):
        TransferCache(tmp_path / "cache")


def test_pool_images_of_any_size_are_resize_padded_into_the_working_frame():
    phantom = generate_phantom(6)
    small = np.asarray(Image.fromarray(phantom.image).resize((112, 112), Image.Resampling.BILINEAR))
    small_masks = {c: np.asarray(Image.fromarray(phantom.masks[c]).resize((112, 112), Image.Resampling.NEAREST))
                   for c in CONCEPTS}
    result = transfer_concepts(phantom.image, _self_pool(small, small_masks, "small"), transfer="warp",
                               transfer_grid=28, cache=TransferCache())
    ious = [_iou(result.boxes[c], mask_box(phantom.masks[c])) for c in ("left_lung", "right_lung", "cardiac_silhouette")]
    assert min(ious) >= 0.85, ious


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_backend_on_the_gpu_gives_the_numpy_plan():
    a, b = _small_problem()
    on_gpu = solve_uot(a, b, device="cuda")
    assert on_gpu.backend.startswith("torch:cuda")
    assert np.allclose(on_gpu.plan, solve_uot(a, b).plan, rtol=1e-9)


def test_memory_cache_drops_the_least_recently_used(tiny_pool):
    cache = TransferCache(max_entries=2)
    images = [generate_phantom(seed).image for seed in (4, 5, 6)]
    first = transfer_concepts(images[0], tiny_pool, transfer_grid=14, cache=cache)
    transfer_concepts(images[1], tiny_pool, transfer_grid=14, cache=cache)
    assert transfer_concepts(images[0], tiny_pool, transfer_grid=14, cache=cache) is first  # now most recent
    transfer_concepts(images[2], tiny_pool, transfer_grid=14, cache=cache)  # drops images[1]
    assert len(cache) == 2 and cache.misses == 3
    assert transfer_concepts(images[0], tiny_pool, transfer_grid=14, cache=cache) is first
    transfer_concepts(images[1], tiny_pool, transfer_grid=14, cache=cache)
    assert cache.misses == 4
    with pytest.raises(DataError, match="max_entries"):
        TransferCache(max_entries=0)


def test_pool_references_are_read_and_prepared_once_per_pool():
    phantom = generate_phantom(8)
    reads = []

    def load(index):
        reads.append(index)
        return PoolReference(f"r{index}", phantom.image, phantom.masks)

    pool = ConceptPool("counted", ["r0", "r1"], load, "counted-v1")
    for seed in (9, 10):
        transfer_concepts(generate_phantom(seed).image, pool, transfer_grid=28, cache=TransferCache())
    assert sorted(reads) == [0, 1]
