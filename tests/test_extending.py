"""docs/extending.md, end to end: one entry of each kind added to a copy of the project the way a user adds it (an
entry appended to its registry's module, its values in params.yaml, and for an estimator family its module and its
dvc.yaml stage), then `dvc repro`. Nothing else is edited, and every entry is what the run uses: the questions come
from the new source in the new answer format (read in it by entropy, the teacher's check and eval), the prompts
from its prompt set, the traces from the new backend, the bands from the new estimator, and the new strategy is
trained, evaluated and reported, on a new student key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from caft.profile import apply, flatten, load_overrides
from tests.dvc_project import always_run, copy_project, lock, ran_stages, run, up_to_date

pytestmark = pytest.mark.integration

N_TOY = 60
SIZES = ("ant", "mouse", "cat", "dog", "horse", "whale")  # the toy source's animals, smallest first
FIRST_WORD = re.compile(r"(?<![\w.])[A-Za-z]+")  # a direct answer in the word format: the first word


def _first_word(text: str) -> str:
    hit = FIRST_WORD.search(text)
    return hit.group(0).lower() if hit else ""


# Appended to each registry's module, as docs/extending.md shows them.
ENTRIES = {
    "src/caft/prepare.py": '''

class LargestParams(Settings):
    n_questions: int = Field(ge=1)


ANIMALS = ("ant", "mouse", "cat", "dog", "horse", "whale")  # smallest first


def _largest(cfg: DataParams, seed: int) -> pd.DataFrame:
    """Which of a few animals is the largest, answered in one word; longer questions repeat a hint."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(source_params(cfg, "largest").n_questions):
        picked = rng.choice(len(ANIMALS), size=2 + i % 4, replace=False)
        rows.append(
            {
                "question_id": f"toy{i:03d}",
                "question": f"Which is the largest: {', '.join(ANIMALS[k] for k in picked)}?"
                + " Think of each one." * (i % 7),
                "options": [],
                "answer_index": -1,
                "answer": ANIMALS[max(picked)].capitalize(),
                "category": "largest",
            }
        )
    return pd.DataFrame(rows)


SOURCES["largest"] = Source(
    _largest, lambda cfg: source_params(cfg, "largest").n_questions, settings=LargestParams
)
''',
    "src/caft/answers.py": """

FORMATS["word"] = free_form(
    "word",
    r"[A-Za-z]+",
    lambda text: str(text).strip().lower() if re.fullmatch(r"[A-Za-z]+", str(text).strip()) else None,
    start=r"([A-Za-z])",
    system="The following are questions{about} answered in one word. Write down ONLY that word and nothing else.",
    cot_system={
        "brackets": "The following are questions{about} answered in one word. Think step by step, then write "
        "the word as [[word]].",
        "answer_is": "The following are questions{about} answered in one word. Think step by step, then finish "
        'with "The answer is W." where W is the word.',
    },
)
""",
    "src/caft/prompts.py": """
PROMPT_SETS["largest"] = PromptSet(
    direct="Name the largest animal. Write down ONLY its name.",
    cot="Name the largest animal. Compare them one by one, then write its name as [[name]].",
    user="{question}",
    target="{answer}",
    option_ids=None,
    marker="brackets",
)
""",
    "src/caft/teacher/backends.py": """

class EchoParams(Settings):
    words: str


def _echo(requests: list[Request], cfg: TeacherParams, sink: Sink) -> Outcome:
    words = backend_params(cfg, "echo").words
    for req in requests:
        sink(req, _response(f"{words} [[{req.answer}]]", "stop", 1, 1, 0.0, 1))
    return Outcome()


BACKENDS["echo"] = Backend(label=lambda cfg: "echo:v1", paid=False, run=_echo, settings=EchoParams)
""",
    "src/caft/strategies.py": """
STRATEGIES["hard_only"] = Strategy("hard_only", "CoT on the hard band only", (Phase("cot", _bands("hard"), "hard"),))
""",
    "src/caft/estimators/registry.py": """

class LengthParams(FamilyParams):
    unit: Literal["characters", "words"]


FAMILIES["length"] = Family(
    module="caft.estimators.length", names=lambda p, v: ["question_length"], settings=LengthParams
)
""",
}

FAMILY_MODULE = '''"""Question length as a complexity score."""

from caft.estimators.registry import family_params
from caft.scores import Kind, long


def run(questions, p, student, variant, workdir):
    unit = family_params(p, "length").unit
    counts = questions["question"].str.len() if unit == "characters" else questions["question"].str.split().str.len()
    return long(questions.assign(n=counts), {"n": "question_length"}, Kind(units=unit)), questions[["question_id"]]
'''

FAMILY_STAGE = """
  estimate_length:
    foreach: ${estimators.length.students}
    do:
      cmd: >-
        python stages/estimate.py --module caft.estimators.length --student ${item}
        --scores data/entropy/${item}/scores.parquet --data data/prepared --out-dir data/estimators/${item}
        --details data/estimators/${item}/details/length.parquet
      deps:
        - stages/estimate.py
        - data/entropy/${item}/scores.parquet
        - data/prepared
        - src/caft/estimators/length.py
        - src/caft/estimators/registry.py
        - src/caft/estimators/aggregates.py
        - src/caft/scores.py
        - src/caft/prepare.py
        - src/caft/sources
        - src/caft/schema.py
        - src/caft/answers.py
        - src/caft/io.py
        - src/caft/params.py
        - src/caft/prompts.py
      params:
        - seed
        - estimators.max_questions
        - estimators.length.unit
      outs:
        - data/estimators/${item}/question_length.parquet
        - data/estimators/${item}/details/length.parquet
"""

PARAMS = {
    "students": ["mini"],  # a new student key: one entry under models
    "models.mini": {
        "ref": "tiny",
        "revision": None,
        "dtype": "float32",
        "trust_remote_code": False,
        "import_key": None,
    },
    "strategies": ["sft", "hard_only"],
    "train.epochs.hard_only": [1],
    "data.source": "largest",
    "data.largest.n_questions": N_TOY,
    "data.test_fraction": 0.25,
    "teacher.backend": "echo",
    "teacher.echo.words": "Compared one by one.",
    "teacher.marker": "brackets",
    "estimators.length": {"students": ["mini"], "unit": "words"},
    "estimators.cot.students": [],
    "estimators.judge.students": [],
    "estimators.max_questions": None,
    "split.estimator": "question_length",
    "split.max_train": None,
    "prompt.answer_prefix": "",
}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


def _add_one_of_each(root: Path) -> None:
    for rel, entry in ENTRIES.items():
        with (root / rel).open("a") as f:
            f.write(entry)
    # the imports the entries' params models use
    _edit(
        root / "src/caft/estimators/registry.py",
        "from typing import TYPE_CHECKING",
        "from typing import TYPE_CHECKING, Literal",
    )
    _edit(
        root / "src/caft/prepare.py",
        "from pathlib import Path\n",
        "from pathlib import Path\n\nfrom pydantic import Field\n",
    )
    # the source's setting is a param of the stage that reads it
    _edit(
        root / "dvc.yaml",
        "      - teacher.import.label\n",
        "      - teacher.import.label\n      - teacher.echo.words\n",
    )
    _edit(
        root / "dvc.yaml",
        "      - data.medmcqa.drop_multi\n",
        "      - data.medmcqa.drop_multi\n      - data.largest.n_questions\n",
    )
    (root / "src/caft/estimators/length.py").write_text(FAMILY_MODULE)
    with (root / "dvc.yaml").open("a") as f:
        f.write(FAMILY_STAGE)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    overrides = load_overrides(root / "profiles/tiny.yaml") | flatten(PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(apply(raw, overrides), sort_keys=False))


def test_one_entry_of_each_kind_runs_through_dvc_repro(tmp_path):
    root = copy_project(tmp_path / "ws")
    _add_one_of_each(root)
    touched = run(["git", "status", "--porcelain", "--untracked-files=all"], root).split("\n")
    assert sorted(line[3:] for line in touched if line) == sorted(
        [*ENTRIES, "src/caft/estimators/length.py", "dvc.yaml", "params.yaml"]
    )
    # the stages import the copy's own caft (this environment's install is the checkout's, as a user's is theirs)
    out = run(["dvc", "repro"], root, PYTHONPATH=str(root / "src"))
    assert {"estimate_length@mini", "train@mini-hard_only-42", "eval@mini-hard_only-42", "report"} <= ran_stages(out)

    # the source's questions, carved into train and test
    prepared = {s: pd.read_parquet(root / f"data/prepared/{s}.parquet") for s in ("train", "test")}
    assert sum(map(len, prepared.values())) == N_TOY
    assert set(pd.concat(prepared.values())["category"]) == {"largest"}
    questions = pd.concat(prepared.values()).set_index("question_id")["question"]
    # the format's questions: no options, the gold in its one spelling (the source wrote "Whale"), the largest named
    golds = pd.concat(prepared.values()).set_index("question_id")["answer"]
    assert golds.to_dict() == {
        q: max(re.findall("|".join(SIZES), text.split("?")[0]), key=SIZES.index) for q, text in questions.items()
    }
    # the student's single-token run read in the format: the first word of the continuation, labelled `word`
    scored = pd.read_parquet(root / "data/entropy/mini/scores.parquet")
    words = scored["continuation"].map(_first_word)
    assert scored["pred_answer"].tolist() == words.tolist()
    assert scored["validity"].tolist() == ["word" if w else "other" for w in words]
    entropy_metrics = json.loads((root / "metrics/entropy/mini.json").read_text())
    rate = float((words != "").mean())
    assert rate > 0 and entropy_metrics["word_rate"] == pytest.approx(rate, abs=1e-6)
    # the family's scores (its own setting: words), and the split banding by them
    scores = pd.read_parquet(root / "data/estimators/mini/question_length.parquet")
    assert set(scores["units"]) == {"words"}
    assert scores.set_index("question_id")["score"].to_dict() == {
        q: float(len(questions[q].split())) for q in scores["question_id"]
    }
    assignments = pd.read_parquet(root / "data/split/mini/assignments.parquet")
    lengths = scores[["question_id", "score"]].rename(columns={"score": "words"})
    train = assignments[assignments["subset"] == "train"].merge(lengths, on="question_id")
    hard = set(train.loc[train["band"] == "hard", "question_id"])
    assert (
        hard and train.loc[train["band"] == "hard", "words"].min() > train.loc[train["band"] == "easy", "words"].max()
    )
    # the backend's traces, for exactly the new strategy's hard items, read through the prompt set's marker
    traces = pd.read_parquet(root / "data/teacher/traces.parquet")
    assert set(traces["teacher"]) == {"echo:v1"} and set(traces["question_id"]) == hard
    assert traces["trace"].str.startswith("Compared one by one. [[").all()  # the backend's own setting
    assert lock(root)["teacher"]["params"]["params.yaml"]["teacher.echo.words"] == "Compared one by one."
    assert traces["correct"].all() and traces["kept"].all()
    # the prompt set's texts are what the student is trained on and asked with
    card = json.loads((root / "data/sets/mini/hard_only.json").read_text())
    assert card["reading"] == {"dataset": "largest", "marker": "brackets", "mode": "cot", "subject": False}
    trained = json.loads((root / "metrics/train/mini/hard_only/42.json").read_text())
    assert trained["n_items"] == len(hard)
    # the new strategy, trained on the new student key, evaluated on every test question and reported
    report = json.loads((root / "reports/report.json").read_text())["mini"]
    assert set(report) == {"sft", "hard_only"}
    assert {s: r["n"] for s, r in report.items()} == dict.fromkeys(report, len(prepared["test"]))
    assert re.search(r"\| mini \| hard_only \| ", (root / "reports/summary.md").read_text())
    # eval read the direct answers in the format, against the one-spelling gold
    preds = pd.read_parquet(root / "data/eval/mini/sft/42/predictions.parquet")
    assert preds["parsed_answer"].tolist() == preds["output"].map(_first_word).tolist()
    expected = [p != "" and p == golds[q] for p, q in zip(preds["parsed_answer"], preds["question_id"], strict=True)]
    assert preds["correct"].tolist() == expected
    # every new setting is a param of the stage that reads it, and of no other
    assert up_to_date(root)
    ran = (root / "params.yaml").read_text()
    for key, value, stage in (
        ("data.largest.n_questions", N_TOY + 4, "prepare"),
        ("estimators.length.unit", "characters", "estimate_length@mini"),
    ):
        (root / "params.yaml").write_text(yaml.safe_dump(apply(yaml.safe_load(ran), {key: value}), sort_keys=False))
        changed = re.findall(r"^(\S+):\s*$", run(["dvc", "status"], root), re.MULTILINE)
        assert {s for s in changed if not always_run(s)} == {"check_params", stage}  # check_params: every key
    (root / "params.yaml").write_text(ran)
