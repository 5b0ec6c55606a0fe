"""`caft compare` (caft.experiments): the experiments table from `dvc exp show --json`."""

import pytest

from caft import experiments
from caft.errors import CaftError


def _entry(rev, name, threshold, caft_acc):
    report = {
        "s": {
            "caft": {
                "balanced_accuracy": caft_acc,
                "balanced_accuracy_ci_low": caft_acc - 0.1,
                "balanced_accuracy_ci_high": caft_acc + 0.1,
                "band_hard_accuracy": 0.25,
                "teacher_calls": 16,
                "cot_target_tokens": 576,
                "data_saving_one_pass": 0.4617,
            },
        }
    }
    data = {
        "params": {"params.yaml": {"data": {"seed": 42, "split": {"threshold": threshold, "units": "quantile"}}}},
        "metrics": {"metrics/report.json": {"data": report}, "metrics/entropy/s.json": {"data": {"roc_auc": 0.866}}},
    }
    return {"rev": rev, "name": name, "data": data, "error": None}


def test_the_table_keeps_changed_params_and_the_headline_metrics():
    head = _entry("a" * 40, "main", 0.75, 0.385)
    head["experiments"] = [{"revs": [_entry("b" * 40, "exp-1", 0.5, 0.4)], "name": "exp-1"}]
    shown = [_entry("workspace", None, 0.75, 0.385), head]
    rows = experiments.rows(shown)
    assert [r["name"] for r in rows] == ["workspace", "main", "exp-1"] and experiments.changed(rows) == [
        "split.threshold"
    ]
    assert experiments.markdown(rows).splitlines() == [
        "| experiment | changed params | student | strategy | balanced acc. [95 % CI] | hard band acc. | teacher calls "
        "| CoT target tokens | saving vs distill | entropy ROC AUC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| workspace | split.threshold=0.75 | s | caft | 0.385 [0.285, 0.485] | 0.250 | 16 | 576 | 0.462 | 0.866 |",
        "| main | split.threshold=0.75 | s | caft | 0.385 [0.285, 0.485] | 0.250 | 16 | 576 | 0.462 | 0.866 |",
        "| exp-1 | split.threshold=0.5 | s | caft | 0.400 [0.300, 0.500] | 0.250 | 16 | 576 | 0.462 | 0.866 |",
    ]


def test_no_report_is_one_line():
    with pytest.raises(CaftError, match=r"^no experiment has metrics/report.json"):
        experiments.markdown([{"name": "x", "params": {}, "metrics": {}}])
