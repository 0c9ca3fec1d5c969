"""Hard negatives: other questions' gold answers put among a prompt's samples for the annotators to rank."""

from rlhfkit.pipeline import with_hard_negatives

GOLD = {
    "Where is Payroll in Austin?": "2nd floor, Building C.",
    "Which floor is Payroll on in Austin?": "In Austin, Payroll is on the 2nd floor of Building C.",  # the same fact
    "Where is Payroll in Boston?": "4th floor, Building A.",
    "Where is HR in Austin?": "1st floor, Building C.",
    "How many vacation days do I get?": "25 days a year.",
    "Is there a gym?": "I don't have that information. HR can help.",
}


def test_random_negatives_are_other_questions_gold_answers_each_once_and_seeded():
    prompts = list(GOLD)
    samples = [["a sample", "a sample", GOLD[p]] for p in prompts]  # a sample equal to the gold is kept once
    got = with_hard_negatives(prompts, samples, GOLD, 2, seed=3)
    assert got == with_hard_negatives(prompts, samples, GOLD, 2, seed=3)
    for p, answers in zip(prompts, got):
        assert answers[:2] == ["a sample", GOLD[p]] and len(answers) == 4 == len(set(answers))
        assert all(a in GOLD.values() and a != GOLD[p] for a in answers[2:])


def test_similar_negatives_are_the_near_misses_not_the_same_answer_said_again():
    prompts = ["Where is Payroll in Austin?"]
    (got,) = with_hard_negatives(prompts, [["3rd floor, Building C."]], GOLD, 2, seed=0, similar=True)
    # its own answer, then the two questions closest in words with another answer: Payroll elsewhere, HR in Austin;
    # not the other wording of its own question (the same floor in a sentence) and not the unrelated ones
    assert got[:2] == ["3rd floor, Building C.", "2nd floor, Building C."]
    assert sorted(got[2:]) == ["1st floor, Building C.", "4th floor, Building A."]
    (one,) = with_hard_negatives(prompts, [[]], GOLD, 1, seed=0, similar=True)
    assert one[1] in ("1st floor, Building C.", "4th floor, Building A.")


def test_similar_negatives_for_a_prompt_without_a_gold_answer_are_still_the_nearest_ones():
    (got,) = with_hard_negatives(["Where is Payroll in Austin today?"], [["a sample"]], GOLD, 2, seed=0, similar=True)
    # nothing to restate, so nothing is skipped: the closest question (5 of 6 words) first, then one of the two
    # that share 4 of 7
    assert got[:2] == ["a sample", "2nd floor, Building C."] and len(got) == 3
    assert got[2] in ("1st floor, Building C.", "4th floor, Building A.")
