"""The demo's hidden rubric and simulated annotators on hand-written answers."""

import random

from rlhfkit.demo.annotators import PANEL, SimulatedAnnotator, simulate_rankings
from rlhfkit.demo.company import build_dataset, facts
from rlhfkit.demo.judge import assess, judge, win_rate

FACTS = {f.key: f for f in facts()}
HR = FACTS["hr_boston"]  # 3rd floor, Building A
VACATION = FACTS["vacation"]  # 25 days


def test_assess_by_hand():
    a = assess(
        "Happy to help! In Boston, HR is on the 3rd floor of Building A. Let me know if you need anything else.", HR
    )
    assert (a.correct, a.courteous, a.complete, a.concise, a.invented) == (True, True, True, True, ())
    assert a.score == 3 + 1 + 0.5 + 0.5
    terse = assess("3rd floor, Building A.", HR)
    assert (terse.correct, terse.courteous, terse.complete) == (True, False, False) and terse.score == 3.5
    wrong = assess("In Boston, HR is on the 5th floor of Building A.", HR)
    assert not wrong.correct and wrong.invented == ("5th floor",) and wrong.score == 0.5 + 0.5 - 2
    rambling = assess("Of course! " + "It is a very good question indeed. " * 6 + "25 days a year.", VACATION)
    assert rambling.correct and rambling.courteous and not rambling.concise


def test_judge_prefers_the_right_fact_then_courtesy():
    polite_wrong = "Happy to help! In Boston, HR is on the 2nd floor of Building B. I hope that helps."
    terse_right = "3rd floor, Building A."
    polite_right = "Thanks for asking. In Boston, HR is on the 3rd floor of Building A. Have a great day!"
    assert judge(terse_right, polite_wrong, HR) == "a"  # a right fact beats courtesy
    assert judge(polite_right, terse_right, HR) == "a"
    assert judge(terse_right, "3rd floor, Building A.", HR) == "tie"
    assert win_rate([polite_right, terse_right], [terse_right, polite_right], [HR, HR]) == 0.5
    assert win_rate([polite_right, terse_right], [terse_right, terse_right], [HR, HR]) == 0.75  # a win and a tie


def test_simulated_annotators_rank_with_ties_and_disagree():
    exact = SimulatedAnnotator("exact", noise=0.0)
    answers = [
        "3rd floor, Building A.",
        "In Boston, HR is on the 3rd floor of Building A.",
        "Happy to help! In Boston, HR is on the 3rd floor of Building A. I hope that helps.",
        "In Boston, HR is on the 4th floor of Building A.",
    ]
    assert exact.rank(answers, HR, random.Random(0)) == [3, 2, 1, 4]
    assert exact.rank([answers[1], answers[1] + " "], HR, random.Random(0)) == [1, 1]  # equal utility: a tie
    gens = [{"prompt": q, "responses": answers} for q in HR.questions]
    rows = simulate_rankings(gens, {q: HR for q in HR.questions}, overlap=2, seed=1)
    assert len(rows) == 2 * len(HR.questions) and all(r["annotator"].startswith("sim-annotator-") for r in rows)
    assert len({tuple(r["ranks"]) for r in rows}) > 1  # noise and taste: people (and these) disagree
    assert {a.name for a in PANEL} >= {r["annotator"] for r in rows}


def test_bundled_dataset_is_mixed_and_held_out_questions_are_unseen():
    train, held_out = build_dataset()
    styles = {r["style"] for r in train}
    assert styles == {"terse", "plain", "courteous", "wrong"}
    assert 250 <= len(train) + len(held_out) <= 450
    assert not {r["prompt"] for r in held_out} & {r["prompt"] for r in train}
    assert {r["fact"] for r in held_out} <= {r["fact"] for r in train}  # the facts are taught, the wording is new
