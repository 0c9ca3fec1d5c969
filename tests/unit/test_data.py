"""Every format reads, detection works, and every bad record is reported as path:line: field: problem."""

import csv
import gzip
import json

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data.convert import convert
from rlhfkit.data.io import DataError, read_records
from rlhfkit.data.schema import Comparison, Generations, PreferencePair, Ranking, SFTRecord, split_hh

runner = CliRunner()


def jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


CASES = {
    "sft": ({"prompt": "Where is HR?", "completion": "3rd floor"}, SFTRecord("Where is HR?", "3rd floor")),
    "messages": (
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        SFTRecord([{"role": "user", "content": "hi"}], "hello"),
    ),
    "pairs": (
        {"prompt": "q", "chosen": "good", "rejected": "bad", "margin": 1},
        PreferencePair("q", "good", "bad", margin=1.0),
    ),
    "comparisons": (
        {"prompt": "q", "response_a": "x", "response_b": "y", "label": "tie"},
        Comparison("q", "x", "y", "tie"),
    ),
    "rankings": (
        {"prompt": "q", "responses": ["x", "y", "z", "w"], "ranks": [1, 2, 2, 3]},
        Ranking("q", ["x", "y", "z", "w"], [1, 2, 2, 3]),
    ),
    "hh": (
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
        PreferencePair("\n\nHuman: hi\n\nAssistant:", " hello!", " go away"),
    ),
    "generations": ({"prompt": "q", "responses": ["x", "y"]}, Generations("q", ["x", "y"])),
    "prompts": ({"prompt": "q"}, Generations("q", [])),
}


@pytest.mark.parametrize("fmt", CASES)
def test_each_format_is_detected_and_parsed(tmp_path, fmt):
    raw, record = CASES[fmt]
    data = read_records(jsonl(tmp_path / "d.jsonl", [raw, raw]))
    assert data.format == fmt and data.records == [record, record]


def test_a_file_of_mixed_judgements_reads_as_preferences_each_line_by_its_own_keys(tmp_path):
    rows = [CASES["comparisons"][0], CASES["rankings"][0], CASES["pairs"][0]]
    data = read_records(jsonl(tmp_path / "mixed.jsonl", rows))
    assert data.format == "preferences"
    assert data.records == [CASES["comparisons"][1], CASES["rankings"][1], CASES["pairs"][1]]
    # forced as one kind, the other kinds' lines are errors; forced as preferences, a file of one kind reads too
    with pytest.raises(DataError) as e:
        read_records(tmp_path / "mixed.jsonl", fmt="comparisons")
    assert [x.split(": ")[1] for x in e.value.errors] == ["response_a", "response_a"]
    assert read_records(jsonl(tmp_path / "one.jsonl", rows[:1]), fmt="preferences").format == "preferences"
    bad = jsonl(tmp_path / "bad.jsonl", [rows[0], {"prompt": "q", "completion": "x"}, rows[1]])
    with pytest.raises(DataError) as e:
        read_records(bad)
    assert e.value.errors == [
        f"{bad}:2: response_a: missing (a comparisons record needs prompt, response_a, response_b, label)"
    ]
    with pytest.raises(DataError) as e:
        read_records(bad, fmt="preferences")
    assert e.value.errors == [
        f"{bad}:2: record: not a judgement: a preferences line is one of pairs, comparisons, rankings"
    ]
    # and a wrong field in a ranking line of a mixed file is reported as a ranking's field
    broken = jsonl(tmp_path / "broken.jsonl", [rows[0], {**rows[1], "ranks": [1, 2]}])
    with pytest.raises(DataError) as e:
        read_records(broken)
    assert e.value.errors[0].startswith(f"{broken}:2: ranks:")


def test_csv_gz_and_datasets_dir(tmp_path):
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["prompt", "responses", "ranks"])
        w.writeheader()
        w.writerow({"prompt": "q, with comma", "responses": json.dumps(["a", "b"]), "ranks": "[2, 1]"})
    assert read_records(path).records == [Ranking("q, with comma", ["a", "b"], [2, 1])]

    gz = tmp_path / "p.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    assert read_records(gz).format == "pairs"

    from datasets import Dataset

    Dataset.from_list([{"prompt": "q", "completion": "a"}] * 3).save_to_disk(str(tmp_path / "ds"))
    data = read_records(tmp_path / "ds")
    assert data.format == "sft" and len(data) == 3


def test_errors_name_file_line_and_field(tmp_path):
    path = jsonl(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "q", "response_a": "x", "response_b": "y", "label": "a"},
            {"prompt": "q", "response_a": "x", "response_b": "y", "label": "maybe"},
            "{not json",
            "",
            {"prompt": "q", "response_a": "", "response_b": "y", "label": "b"},
            {"prompt": "q", "response_b": "y", "label": "b"},
        ],
    )
    with pytest.raises(DataError) as e:
        read_records(path)
    assert e.value.errors == [
        f"{path}:2: label: 'maybe' is not one of a, b, tie, both_bad",
        f"{path}:3: json: invalid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{path}:5: response_a: is empty",
        f"{path}:6: response_a: missing (a comparisons record needs prompt, response_a, response_b, label)",
    ]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"prompt": "q", "responses": ["a", "b"], "ranks": [1]}, "ranks: expected a list of 2 ranks"),
        ({"prompt": "q", "responses": ["a", "b"], "ranks": [1, 0]}, "ranks[1]: expected an integer >= 1"),
        ({"prompt": "q", "responses": ["a"], "ranks": [1]}, "responses: expected a list of at least 2"),
        ({"prompt": "q", "responses": ["a", "b"], "ranks": [1, 2], "not_rankable": "yes"}, "not_rankable: expected"),
        (
            {"prompt": [{"role": "boss", "content": "x"}], "responses": ["a", "b"], "ranks": [1, 2]},
            "prompt[0].role: 'boss' is not one of",
        ),
    ],
)
def test_ranking_errors(tmp_path, raw, message):
    with pytest.raises(DataError, match=r"r\.jsonl:1: " + message.replace("[", r"\[").replace("]", r"\]")):
        read_records(jsonl(tmp_path / "r.jsonl", [raw]))


def test_pair_votes_and_messages_errors(tmp_path):
    with pytest.raises(DataError, match=r"p\.jsonl:1: votes\.chosen: expected a count >= 0"):
        read_records(
            jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "votes": {"chosen": -1}}])
        )
    with pytest.raises(DataError, match=r"m\.jsonl:1: messages: the last message must be the assistant's"):
        read_records(jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "user", "content": "q"}]}]))
    with pytest.raises(DataError, match="no known format has these keys"):
        read_records(jsonl(tmp_path / "x.jsonl", [{"question": "q"}]))
    with pytest.raises(DataError, match="needs one of: sft, messages"):
        read_records(
            jsonl(tmp_path / "y.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}]), expect=("sft", "messages")
        )


def test_hh_split_rebuilds_the_transcripts():
    chosen = (
        "\n\nHuman: Where is HR?\n\nAssistant: Which office?\n\nHuman: Boston.\n\nAssistant: 3rd floor of Building A."
    )
    rejected = "\n\nHuman: Where is HR?\n\nAssistant: Which office?\n\nHuman: Boston.\n\nAssistant: No idea."
    prompt, c, r = split_hh(chosen, rejected)
    assert prompt.endswith("Human: Boston.\n\nAssistant:") and prompt.count("Assistant:") == 2
    assert prompt + c == chosen and prompt + r == rejected
    # the responses share a prefix ("Sure, ") that must stay in the responses, not the prompt
    p2, c2, r2 = split_hh("\n\nHuman: hi\n\nAssistant: Sure, yes", "\n\nHuman: hi\n\nAssistant: Sure, no")
    assert (p2, c2, r2) == ("\n\nHuman: hi\n\nAssistant:", " Sure, yes", " Sure, no")


def test_convert_rankings_to_pairs_and_comparisons():
    r = Ranking("q", ["best", "mid1", "mid2", "worst"], [1, 2, 2, 3])
    pairs, skipped = convert([r, Ranking("q", ["a", "b"], [1, 2], not_rankable=True)], "pairs")
    assert {(p.chosen, p.rejected) for p in pairs} == {
        ("best", "mid1"),
        ("best", "mid2"),
        ("best", "worst"),
        ("mid1", "worst"),
        ("mid2", "worst"),
    }
    assert skipped == {"not_rankable": 1}
    comps, _ = convert([r], "comparisons")
    assert [c.label for c in comps] == ["a", "a", "a", "tie", "a", "a"]
    sft, _ = convert([r, Comparison("q", "x", "y", "b"), Comparison("q", "x", "y", "both_bad")], "sft")
    assert [s.completion for s in sft] == ["best", "y"]


def test_cli_validate_and_convert(tmp_path):
    good = jsonl(
        tmp_path / "c.jsonl",
        [
            {"prompt": "q", "response_a": "x", "response_b": "y", "label": "a"},
            {"prompt": "q", "response_a": "x", "response_b": "y", "label": "tie"},
        ],
    )
    res = runner.invoke(app, ["data", "validate", str(good)])
    assert res.exit_code == 0 and "2 records, format comparisons" in res.output
    out = tmp_path / "out" / "pairs.jsonl"
    res = runner.invoke(app, ["data", "convert", str(good), str(out), "--to", "pairs"])
    assert res.exit_code == 0 and "skipped: 1 tie" in res.output
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"prompt": "q", "chosen": "x", "rejected": "y"}]
    assert runner.invoke(app, ["data", "validate", str(out)]).exit_code == 0

    bad = jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "response_a": "x", "response_b": "y", "label": "z"}])
    res = runner.invoke(app, ["data", "validate", str(bad)])
    assert res.exit_code == 2 and f"{bad}:1: label:" in res.output and "Traceback" not in res.output
    # a failed conversion leaves an existing output untouched
    before = out.read_text()
    assert runner.invoke(app, ["data", "convert", str(bad), str(out), "--to", "pairs"]).exit_code == 2
    assert out.read_text() == before
    assert runner.invoke(app, ["data", "validate", str(tmp_path / "missing.jsonl")]).exit_code == 2
