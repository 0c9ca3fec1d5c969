"""The demo's hidden rubric and simulated annotators on hand-written answers."""

import random

import pytest

from rlhfkit.demo.annotators import PANEL, SimulatedAnnotator, simulate_rankings
from rlhfkit.demo.company import build_dataset, facts
from rlhfkit.demo.judge import assess, degenerate, demo_vocabulary, judge
from rlhfkit.demo.run import RubricJudge, facts_by_question, probe_pairs
from rlhfkit.pipeline import properties, win_rate, win_rate_interval

FACTS = {f.key: f for f in facts()}
HR = FACTS["hr_boston"]  # 3rd floor, Building A
VACATION = FACTS["vacation"]  # 25 days
IT_LONDON = FACTS["it_help_desk_london"]  # ground floor, West Wing
UNKNOWN = FACTS["unknown_payroll_austin"]  # the handbook does not say
VOCAB = demo_vocabulary()


def test_assess_by_hand():
    a = assess(
        "Happy to help! In Boston, HR is on the 3rd floor of Building A. Let me know if you need anything else.", HR
    )
    assert (a.correct, a.courteous, a.complete, a.concise, a.invented, a.broken) == (True, True, True, True, (), None)
    assert (a.level, a.style, a.score) == (4, 2.0, 3 * 4 + 2.0)
    terse = assess("3rd floor, Building A.", HR)
    assert (terse.correct, terse.courteous, terse.complete) == (True, False, False) and terse.score == 12.5
    wrong = assess("In Boston, HR is on the 5th floor of Building A.", HR)
    assert not wrong.correct and wrong.invented == ("5th floor",) and (wrong.level, wrong.score) == (1, 3 + 1.0)
    rambling = assess("Of course! " + "It is a very good question indeed. " * 6 + "25 days a year.", VACATION)
    assert rambling.correct and rambling.courteous and not rambling.concise
    # a plain wrong answer (no other fact's value) is level 2; "I don't know" on an answerable question is level 3
    assert assess("You should ask someone about it.", HR).level == 2
    dunno = assess("I don't have that information. HR can help.", HR)
    assert dunno.abstains and not dunno.correct and dunno.level == 3


def test_unanswerable_questions_reward_saying_so_and_punish_inventing_more_than_being_wrong():
    right = assess("I don't have that information. Reception in Austin can help.", UNKNOWN)
    assert right.correct and right.abstains and not right.answerable and right.level == 4
    invented = assess("In Austin, Payroll is on the 3rd floor of Building C.", UNKNOWN)
    assert invented.invented and not invented.correct and invented.level == 1
    assert assess("Payroll has 4 rooms.", UNKNOWN).invented == ("a number",)
    vague = assess("Please look at the notice board in the office.", UNKNOWN)
    assert not vague.invented and vague.level == 2  # wrong, but nothing made up: better than inventing
    assert judge("Please look at the notice board in the office.", invented_text(), UNKNOWN) == "a"
    assert judge("I don't know; please ask reception in Austin.", invented_text(), UNKNOWN) == "a"


def invented_text() -> str:
    return "Happy to help! In Austin, Payroll is on the 3rd floor of Building C. Have a great day!"


def test_the_judge_cannot_be_gamed_by_broken_text_or_politeness():
    # the fresh-clone examples
    assert (
        judge("Ground floor, the of the of the East Wing.", "Ground floor, the East Wing.", FACTS["security_london"])
        == "b"
    )
    glued = (
        "Happy to help! Full-time employees get 25 days of paid vacation a year. Fetkk! know Full-time employees "
        "get 25 days..."
    )
    plain = "Full-time employees get 25 days of paid vacation a year."
    assert degenerate(glued, VOCAB) is not None and judge(glued, plain, VACATION, vocabulary=VOCAB) == "b"
    assert degenerate("Fetkk is on the ground floor.", VOCAB) == "non-words"
    assert degenerate("Fetkk is on the ground floor.", None) is None  # a real model's English: no vocabulary check
    assert degenerate("In Boston, HR is on the 3rd floor of", VOCAB) == "cut off"
    assert degenerate("HR HR is here.", VOCAB) == "repeated words"
    # two wrong facts: the politer one does not win
    polite_wrong = "Happy to help! In Boston, HR is on the 2nd floor of Building B. I hope that helps."
    assert judge(polite_wrong, "In Boston, HR is on the 4th floor of Building A.", HR) == "tie"
    # a wrong fact never beats "I don't know"
    assert judge(polite_wrong, "I don't know; please ask HR.", HR) == "b"
    # every expert answer of the bundle is well-formed text by the rubric's own measure
    train, validation, test = build_dataset()
    assert all(degenerate(r["completion"], VOCAB) is None for r in train + validation + test)


def test_judge_prefers_the_right_fact_then_courtesy():
    terse_right = "3rd floor, Building A."
    polite_right = "Thanks for asking. In Boston, HR is on the 3rd floor of Building A. Have a great day!"
    polite_wrong = "Happy to help! In Boston, HR is on the 2nd floor of Building B. I hope that helps."
    assert judge(terse_right, polite_wrong, HR) == "a"  # a right fact beats courtesy
    assert judge(polite_right, terse_right, HR) == "a"
    assert judge(terse_right, "3rd floor, Building A.", HR) == "tie"
    assert win_rate(["a", "b"]) == 0.5 and win_rate(["a", "tie"]) == 0.75


def test_the_rubric_judge_reports_each_rate_on_the_questions_it_applies_to():
    known = facts_by_question()
    rubric = RubricJudge(known, vocabulary=VOCAB)
    questions = [HR.questions[0], VACATION.questions[0], UNKNOWN.questions[0], UNKNOWN.questions[1]]
    answers = [
        "In Boston, HR is on the 3rd floor of Building A.",  # right
        "I don't know; please ask HR.",  # a wrongful abstention
        "I don't have that information. Reception in Austin can help.",  # the right abstention
        "In Austin, Payroll is on the 3rd floor of Building C.",  # a hallucination
    ]
    assert properties(rubric, questions, answers) == {
        "fact_accuracy": 0.5,
        "wrongful_abstention_rate": 0.5,
        "abstention_rate": 0.5,
        "hallucination_rate": 0.5,
        "degenerate_rate": 0.0,
        "courteous": 0.0,
    }
    assert [rubric.category(q) for q in questions] == ["answerable", "answerable", "unanswerable", "unanswerable"]


def test_the_rubric_judge_names_the_kind_of_each_answer():
    rubric = RubricJudge(facts_by_question(), vocabulary=VOCAB)
    hr, unknown = HR.questions[0], UNKNOWN.questions[0]
    cases = [
        (hr, "Happy to help! In Boston, HR is on the 3rd floor of Building A.", "right, a full sentence"),
        (hr, "3rd floor, Building A.", "right, a fragment"),
        (hr, "I don't have that information. HR can help.", '"I don\'t know" where the handbook answers'),
        (hr, "Please ask someone at the office.", "wrong, nothing specific"),
        (hr, "In Boston, HR is on the 5th floor of Building A.", "another fact's value"),
        (unknown, "I don't have that information. Reception in Austin can help.", RubricJudge.KINDS[5]),
        (unknown, "Please ask someone at the office.", "no answer, nothing specific"),
        (unknown, "In Austin, Payroll is on the 3rd floor of Building C.", "an invented value"),
        (hr, "floor floor floor floor floor.", "broken text"),
    ]
    assert [rubric.kind(q, a) for q, a, _ in cases] == [k for *_, k in cases]
    assert sorted(k for *_, k in cases) == sorted(RubricJudge.KINDS)  # every kind is reachable


def test_scores_by_kind_keep_the_judges_order_and_each_models_count():
    from rlhfkit.pipeline import score_by_kind

    kinds = {"sft": ["b", "a", "b"], "ppo": ["c", "a", "a"]}
    scores = {"sft": [1.0, 2.0, 4.0], "ppo": [4.0, 5.0, 7.0]}
    assert score_by_kind(kinds, scores, order=("a", "b", "unused")) == {
        "a": {"sft": {"mean": 2.0, "count": 1}, "ppo": {"mean": 6.0, "count": 2}},
        "b": {"sft": {"mean": 2.5, "count": 2}},
        "c": {"ppo": {"mean": 4.0, "count": 1}},
    }


def test_bootstrap_interval_of_the_win_rate():
    verdicts = ["a"] * 30 + ["b"] * 10
    low, high = win_rate_interval(verdicts, seed=0)
    assert low < 0.75 < high and 0.55 < low and high < 0.9  # binomial se at n=40 is 0.068
    assert win_rate_interval(verdicts, seed=0) == [low, high]  # seeded
    assert win_rate_interval(["a"] * 40) == [1.0, 1.0]


def test_probe_pairs_separate_what_the_reward_model_must_know():
    probes = probe_pairs("test")
    assert len(probes["swapped_fact"]) == 52 and len(probes["style"]) == 52
    assert len(probes["answer_vs_abstain"]) == 52 + 16
    assert probes["abstain_vs_invented"] == [p for p in probes["answer_vs_abstain"] if "I don't" in p["chosen"]]
    assert len(probes["abstain_vs_invented"]) == 16
    for pair in probes["swapped_fact"]:
        fact = facts_by_question()[pair["prompt"]]
        assert assess(pair["chosen"], fact).level == 4 and assess(pair["rejected"], fact).level in (1, 2)
    for pair in probes["answer_vs_abstain"]:
        fact = facts_by_question()[pair["prompt"]]
        assert assess(pair["chosen"], fact).level > assess(pair["rejected"], fact).level


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
    broken = "In Boston, HR is on the 3rd floor of Building A. Fetkk!"
    assert exact.rank([broken, answers[3]], HR, random.Random(0), vocabulary=VOCAB) == [2, 1]  # broken loses
    gens = [{"prompt": q, "responses": answers} for q in HR.questions]
    rows = simulate_rankings(gens, {q: HR for q in HR.questions}, overlap=2, seed=1)
    assert len(rows) == 2 * len(HR.questions) and all(r["annotator"].startswith("sim-annotator-") for r in rows)
    assert len({tuple(r["ranks"]) for r in rows}) > 1  # noise and taste: people (and these) disagree
    assert {a.name for a in PANEL} >= {r["annotator"] for r in rows}


def test_bundled_dataset_has_three_disjoint_question_sets_with_unanswerable_questions_in_each():
    train, validation, test = build_dataset()
    styles = {r["style"] for r in train}
    assert styles == {"terse", "plain", "courteous", "wrong"}
    assert 500 <= len(train) <= 600 and len(validation) == len(test) == 68
    questions = [{r["prompt"] for r in split} for split in (train, validation, test)]
    assert not questions[0] & questions[1] and not questions[0] & questions[2] and not questions[1] & questions[2]
    for split in (train, validation, test):
        assert sum(not r["answerable"] for r in split) >= 16  # every set asks what the handbook does not say
    # the facts are taught (answerable or not), the wording is new
    assert {r["fact"] for r in validation} == {r["fact"] for r in test} <= {r["fact"] for r in train}
    unknown = [r for r in train if not r["answerable"] and r["style"] != "wrong"]
    assert all(
        "I don't" in r["completion"] and "can help" in r["completion"] or "ask" in r["completion"] for r in unknown
    )


def test_later_wordings_are_for_training_only_and_not_near_a_held_out_wording():
    import re

    from rlhfkit.demo.company import POLICY_PREFIXES, overlap

    def words(q: str) -> set[str]:
        return set(re.findall(r"[a-z]+", q.lower()))

    train, validation, test = build_dataset()
    trained = {r["prompt"] for r in train}
    held_out = {r["prompt"] for r in validation + test}
    later = [(f, q) for f in facts() for q in f.more]
    assert len(later) >= 100
    for f, q in later:
        assert q in trained and q not in held_out and q not in f.questions
        for h in (f.questions[f.validation], f.questions[f.test]):
            assert len(words(q) & words(h)) / len(words(q) | words(h)) < 0.5, (q, h)
            assert overlap(q, h) < 0.5, (q, h)
    # every policy question is now trained in at least three natural wordings (besides the greeting-prefixed copies
    # of the first)
    greetings = tuple(p.format(q="") for p in POLICY_PREFIXES)
    for f in facts():
        asked = [q for i, q in enumerate(f.wordings) if i not in (f.validation, f.test)]
        natural = {q for q in asked if not q.startswith(greetings)}
        assert len(natural) >= 3, f.key


def test_overlap_sees_through_contractions_plurals_and_stop_words():
    from rlhfkit.demo.company import content_words, overlap

    assert content_words("What's the refresh cycle for work laptops?") == {"refresh", "cycle", "work", "laptop"}
    assert overlap("What's the refresh cycle for work laptops?", "What is the laptop refresh cycle?") == 0.75
    assert overlap("Which day of the month are we paid?", "What day do we get paid?") == 2 / 3
    assert overlap("Do we get money for fitness?", "How much will work contribute towards my gym fees?") == 0.0


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_bundled_files_are_the_generated_ones(split):
    import json

    from rlhfkit.demo import data_path
    from rlhfkit.demo.company import SPLITS

    rows = [json.loads(x) for x in open(data_path(f"helpdesk_{split}.jsonl")).read().splitlines()]
    assert rows == build_dataset()[SPLITS.index(split)]


def test_prompts_whose_samples_all_merged_are_sampled_again_and_only_those():
    from rlhfkit.pipeline import resample_alike

    asked = []

    def sample(prompts, attempt):
        asked.append((list(prompts), attempt))
        # the first retry still gives one answer for "p3", the second gives it two
        return [["x", "x"] if p == "p3" and attempt == 0 else [f"{p}-a", f"{p}-b"] for p in prompts]

    answers = [["a", "b"], ["same", "same"], ["only one"], ["c", "c"]]
    got = resample_alike(["p1", "p2", "p3x", "p3"], answers, sample, log=lambda _: None)
    assert got == [["a", "b"], ["p2-a", "p2-b"], ["only one"], ["p3-a", "p3-b"]]
    assert asked == [(["p2", "p3"], 0), (["p3"], 1)]  # a single requested answer is not "merged"
    assert answers[1] == ["same", "same"]  # the caller's lists are not changed
    # no more than `tries` attempts: what is still one answer stays as it is
    stuck = resample_alike(["p"], [["y", "y"]], lambda ps, _: [["z", "z"] for _ in ps], tries=2, log=lambda _: None)
    assert stuck == [["z", "z"]]
