"""XBench-style metrics against independent implementations: hand cases and 1,000 random cases each.

The references below are written from the definitions, pixel by pixel and pair by pair
(Python loops, sets of coordinates), sharing no code with cxr_attrib.scoring.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu, spearmanr

from cxr_attrib.errors import DataError
from cxr_attrib.scoring.pixel_grounding import (
    RAW_TAU,
    TAU_GRID,
    calibrate_tau,
    calibration_split,
    mask_overlap,
    normalise_map,
    pixel_pointing_game,
    predicted_mask,
    tau_sweep,
    truth_mask,
)
from cxr_attrib.scoring.recognition import accuracy, auc, correlation, f1, recognition_scores, spearman

MANY = settings(max_examples=1000, deadline=None, derandomize=True)


# -- independent references ------------------------------------------------------------


def ref_mask(values, tau, raw=False):
    """{(r, c)} predicted, by loops: min-max over non-NaN pixels, then > tau."""
    finite = [v for row in values for v in row if not math.isnan(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    out = set()
    for r, row in enumerate(values):
        for c, v in enumerate(row):
            if math.isnan(v):
                continue
            n = v if raw else (0.0 if hi == lo else (v - lo) / (hi - lo))
            if n > tau:
                out.add((r, c))
    return out


def ref_iou_dice(pred, truth, ignored=frozenset()):
    p, g = set(pred) - ignored, set(truth) - ignored
    if not p and not g:
        return 1.0, 1.0
    inter = len(p & g)
    return inter / len(p | g), 2 * inter / (len(p) + len(g))


def cells(mask):
    return {(int(r), int(c)) for r, c in zip(*np.nonzero(mask))}


def ref_pointing(values, truth):
    """(any, share) by loops over the maximal finite pixels."""
    finite = [(v, r, c) for r, row in enumerate(values) for c, v in enumerate(row) if not math.isnan(v)]
    if not finite or not truth.any():
        return 0.0, 0.0
    top = max(v for v, _, _ in finite)
    peaks = [(r, c) for v, r, c in finite if v == top]
    hits = sum(1 for r, c in peaks if truth[r, c])
    return float(hits > 0), hits / len(peaks)


def ref_auc(labels, probs):
    pos = [p for y, p in zip(labels, probs) if y == 1]
    neg = [p for y, p in zip(labels, probs) if y == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def ref_f1_acc(labels, probs, threshold):
    tp = fp = fn = right = 0
    for y, p in zip(labels, probs):
        said = p >= threshold
        right += said == bool(y)
        tp += said and y == 1
        fp += said and y == 0
        fn += (not said) and y == 1
    f = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    return f, right / len(labels)


# -- random cases ----------------------------------------------------------------------
# Hypothesis draws a seed and numpy builds the case from it: 1,000 cases per property stay
# fast (drawing whole arrays through hypothesis strategies cost ~10x more).

seeds = st.integers(0, 2**32 - 1)
LEVELS = np.array([0.0, 0.25, 0.5, 1.0, 2.0, -1.0, np.nan])  # few levels: ties (plateaus) are common


def map_and_truth(rng):
    shape = tuple(rng.integers(1, 10, 2))
    return rng.choice(LEVELS, shape), rng.random(shape) < rng.random()


def labelled(rng, both=True):
    n = int(rng.integers(2 if both else 1, 31))
    labels = rng.integers(0, 2, n)
    if both:
        labels[:2] = (0, 1)
    return labels, rng.choice([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0], n)


# -- pixel masks -----------------------------------------------------------------------


def test_truth_mask_fills_the_union_of_boxes_by_pixel_centres():
    mask = truth_mask([[1, 1, 3, 2], [2, 0, 3.4, 3]], (3, 4))
    # second box covers column 2 only (centre 3.5 > 3.4), rows 0..2
    assert mask.astype(int).tolist() == [[0, 0, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0]]


def test_iou_dice_hand_case():
    pred = np.zeros((4, 4), bool)
    pred[0:2, 0:2] = True  # 4 px
    truth = np.zeros((4, 4), bool)
    truth[1:3, 1:3] = True  # 4 px, 1 shared
    scores = mask_overlap(pred, truth)
    assert scores.iou == pytest.approx(1 / 7) and scores.dice == pytest.approx(2 / 8)
    assert (scores.tp, scores.predicted, scores.truth) == (1, 4, 4)
    assert mask_overlap(np.zeros((2, 2), bool), np.zeros((2, 2), bool)).iou == 1.0
    assert mask_overlap(pred, np.zeros((4, 4), bool)).dice == 0.0


def test_raw_rule_uses_medklip_threshold():
    attention = np.full((14, 14), 1 / 196)  # uniform attention: 0.0051 < 0.008
    attention[3, 4] = 0.05
    assert cells(predicted_mask(attention, RAW_TAU, rule="raw")) == {(3, 4)}


def test_normalised_map_ignores_nan_and_flat_maps():
    assert np.array_equal(normalise_map([[3.0, 3.0]]), [[0.0, 0.0]])
    out = normalise_map([[np.nan, 1.0], [5.0, 3.0]])
    assert np.isnan(out[0, 0]) and out[1].tolist() == [1.0, 0.5]


@MANY
@given(seeds, st.sampled_from(TAU_GRID + (0.0, 1.0)))
def test_mask_iou_dice_match_reference(seed, tau):
    values, truth = map_and_truth(np.random.default_rng(seed))
    ignored = frozenset(cells(np.isnan(values)))
    pred = predicted_mask(values, tau)
    assert cells(pred) == ref_mask(values.tolist(), tau)
    got = mask_overlap(pred, truth, ignore=np.isnan(values))
    want = ref_iou_dice(cells(pred), cells(truth), ignored)
    assert got.iou == pytest.approx(want[0], abs=1e-12) and got.dice == pytest.approx(want[1], abs=1e-12)


@MANY
@given(seeds)
def test_pointing_games_match_reference(seed):
    values, truth = map_and_truth(np.random.default_rng(seed))
    want_any, want_share = ref_pointing(values.tolist(), truth)
    assert pixel_pointing_game(values, truth, convention="any") == want_any
    assert pixel_pointing_game(values, truth, convention="share") == pytest.approx(want_share, abs=1e-12)


def test_pointing_conventions_differ_on_a_plateau():
    flat = np.ones((4, 4))
    truth = np.zeros((4, 4), bool)
    truth[0, 0] = True
    assert pixel_pointing_game(flat, truth, convention="any") == 1.0  # lenient: a flat map always hits
    assert pixel_pointing_game(flat, truth, convention="share") == pytest.approx(1 / 16)


@MANY
@given(seeds, st.booleans())
def test_tau_sweep_matches_reference_per_tau(seed, raw):
    rng = np.random.default_rng(seed)
    cases = [map_and_truth(rng) for _ in range(int(rng.integers(1, 4)))]
    maps = [values for values, _ in cases]
    truths = [truth for _, truth in cases]
    taus = (0.0, 0.1, 0.25, 0.5, 0.9, 1.0)
    sweep = tau_sweep(maps, truths, taus=taus, rule="raw" if raw else "normalised")
    for k, tau in enumerate(taus):
        per = [ref_iou_dice(ref_mask(v.tolist(), tau, raw), cells(g), frozenset(cells(np.isnan(v))))
               for v, g in cases]
        assert sweep.iou[k] == pytest.approx(np.mean([p[0] for p in per]), abs=1e-12)
        assert sweep.dice[k] == pytest.approx(np.mean([p[1] for p in per]), abs=1e-12)


def test_calibrated_tau_comes_from_the_calibration_split_only():
    # calibration maps are sharp (best at a high tau); test maps are blurry (best low)
    def case(sharp):
        truth = np.zeros((8, 8), bool)
        truth[2:4, 2:4] = True
        heat = np.where(truth, 1.0, 0.0)
        if not sharp:
            heat = heat + 0.9 * np.pad(np.ones((6, 6)), 1)  # most of the image near the top
        return heat, truth

    ids = [f"s{k}" for k in range(40)]
    calib = [i for i in ids if calibration_split(i)]
    test = [i for i in ids if not calibration_split(i)]
    assert calib and test and not set(calib) & set(test)
    maps, truths = zip(*[case(True) for _ in calib])
    tau = calibrate_tau(maps, truths)
    sharp = tau_sweep(maps, truths)
    assert tau == sharp.best() and sharp.at(tau)[1] == 1.0
    assert calibration_split("s3", fraction=0.3) == calibration_split("s3", fraction=0.3)
    share = np.mean([calibration_split(f"x{k}") for k in range(4000)])
    assert 0.27 < share < 0.33


@pytest.mark.parametrize("call, words", [
    (lambda: mask_overlap(np.zeros((2, 3), bool), np.zeros((3, 2), bool)), "shape"),
    (lambda: predicted_mask(np.zeros((2, 2)), 1.5), "tau"),
    (lambda: predicted_mask(np.zeros((2, 2)), 0.5, rule="soft"), "rule"),
    (lambda: pixel_pointing_game(np.zeros((2, 2)), np.zeros((2, 2), bool), convention="strict"), "convention"),
    (lambda: tau_sweep([np.zeros((2, 2))], []), "one truth mask per map"),
    (lambda: calibrate_tau([], []), "calibration split is empty"),
    (lambda: normalise_map([[np.inf]]), "infinite"),
])
def test_bad_input_is_refused_by_name(call, words):
    with pytest.raises(DataError, match=words):
        call()


# -- recognition -----------------------------------------------------------------------

def test_recognition_hand_case():
    labels, probs = [0, 0, 1, 1, 1], [0.2, 0.6, 0.6, 0.9, 0.4]
    assert auc(labels, probs) == pytest.approx((1 + 0.5 + 1 + 1 + 1 + 0) / 6)  # pos 0.6, 0.9, 0.4 vs neg 0.2, 0.6
    assert accuracy(labels, probs) == pytest.approx(3 / 5)
    assert f1(labels, probs) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert math.isnan(auc([1, 1], [0.2, 0.3]))


@MANY
@given(seeds)
def test_auc_matches_pair_count_and_scipy(seed):
    labels, probs = labelled(np.random.default_rng(seed))
    got = auc(labels, probs)
    assert got == pytest.approx(ref_auc(labels.tolist(), probs.tolist()), abs=1e-12)
    u = mannwhitneyu(probs[labels == 1], probs[labels == 0]).statistic
    assert got == pytest.approx(u / ((labels == 1).sum() * (labels == 0).sum()), abs=1e-12)


@MANY
@given(seeds, st.sampled_from([0.3, 0.5, 0.9]))
def test_accuracy_f1_match_reference(seed, threshold):
    labels, probs = labelled(np.random.default_rng(seed), both=False)
    want_f1, want_acc = ref_f1_acc(labels.tolist(), probs.tolist(), threshold)
    assert f1(labels, probs, threshold=threshold) == pytest.approx(want_f1, abs=1e-12)
    assert accuracy(labels, probs, threshold=threshold) == pytest.approx(want_acc, abs=1e-12)


@MANY
@given(seeds)
def test_spearman_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 26))
    x, y = rng.choice([0.0, 0.1, 0.3, 0.5, 0.7, 1.0], n), rng.choice([0.0, 0.2, 0.4, 0.6, 1.0], n)
    got = spearman(x, y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(spearmanr(x, y).statistic, abs=1e-9)


def test_bootstrap_intervals_hold_the_estimate_and_are_seeded():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 40 + [0] * 60)
    probs = np.clip(np.where(labels == 1, 0.65, 0.35) + rng.normal(0, 0.2, 100), 0, 1)
    first = recognition_scores(labels, probs, n_boot=300, seed=1)
    assert first == recognition_scores(labels, probs, n_boot=300, seed=1)
    for metric in (first.auc, first.accuracy, first.f1):
        assert metric.low <= metric.value <= metric.high and metric.high - metric.low < 0.3
    assert (first.n_pos, first.n_neg) == (40, 60)
    assert first.auc.value == pytest.approx(ref_auc(labels.tolist(), probs.tolist()))
    rho = correlation([0.6, 0.7, 0.8, 0.9, 0.95], [0.1, 0.3, 0.2, 0.5, 0.6], n_boot=300)
    assert rho.value == pytest.approx(spearmanr([0.6, 0.7, 0.8, 0.9, 0.95], [0.1, 0.3, 0.2, 0.5, 0.6]).statistic)
    assert rho.low <= rho.value <= rho.high


@pytest.mark.parametrize("call, words", [
    (lambda: auc([0, 2], [0.1, 0.2]), "labels must be 0"),
    (lambda: auc([0, 1], [0.1, 1.2]), "probs must be"),
    (lambda: accuracy([0, 1], [0.1, 0.2], threshold=1.0), "threshold"),
    (lambda: recognition_scores([0, 1], [0.1, 0.2], n_boot=0), "n_boot"),
    (lambda: spearman([1, 2], [1, 2, 3]), "equal length"),
])
def test_recognition_bad_input(call, words):
    with pytest.raises(DataError, match=words):
        call()
