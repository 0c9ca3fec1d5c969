"""Agreement statistics against textbook values."""

import pytest

from rlhfkit.annotate.agreement import cohens_kappa, fleiss_kappa, krippendorff_alpha, percent_agreement


def test_cohens_kappa_textbook():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    units = {i: {"r1": a, "r2": b} for i, (a, b) in enumerate(pairs)}
    assert cohens_kappa(units, "r1", "r2") == pytest.approx(0.4, abs=1e-12)


def test_fleiss_kappa_textbook():
    # Fleiss (1971) style table (as on Wikipedia): 10 subjects, 14 raters, 5 categories -> kappa 0.210
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    units = {}
    for i, row in enumerate(table):
        labels = [c for c, n in enumerate(row) for _ in range(n)]
        units[i] = {f"r{j}": label for j, label in enumerate(labels)}
    assert fleiss_kappa(units) == pytest.approx(0.2099, abs=1e-4)


def test_krippendorff_alpha_and_percent_agreement_by_hand():
    units = {
        1: {"x": "a", "y": "a"},
        2: {"x": "a", "y": "b"},
        3: {"x": "b", "y": "b"},
        4: {"x": "b", "y": "b"},
        5: {"x": "a"},
    }  # a single label cannot be paired: ignored
    # o_aa 2, o_ab = o_ba = 1, o_bb 4; n_a 3, n_b 5, n 8: alpha = 1 - 7 * 2 / (2 * 3 * 5)
    assert krippendorff_alpha(units) == pytest.approx(1 - 14 / 30, abs=1e-12)
    assert percent_agreement(units) == 0.75
    perfect = {i: {"x": "a", "y": "a", "z": "a"} for i in range(3)} | {9: {"x": "b", "y": "b", "z": "b"}}
    assert krippendorff_alpha(perfect) == 1.0 and fleiss_kappa(perfect) == 1.0
