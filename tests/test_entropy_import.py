import pandas as pd
import pytest

from caft import schema
from caft.entropy_import import join, load_raw
from caft.errors import CaftError
from tests.conftest import FIXTURES, section

CFG = section("entropy.import", path=str(FIXTURES / "labarss_entropy_qwen2.tsv"))


def _questions() -> pd.DataFrame:
    raw = pd.read_csv(FIXTURES / "labarss_entropy_qwen2.tsv", sep="\t")
    q, _ = schema.validate(raw[raw["question_id"] != 99999])
    q["subset"] = ["train", "train", "test", "test"]
    extra = q.iloc[[0]].assign(question_id="not-published")
    return pd.concat([q, extra], ignore_index=True)


def test_import_joins_on_id_and_parses_published_answers():
    raw = load_raw(CFG, "qwen2")
    table = join(_questions(), raw, CFG, "qwen2")
    table = table.set_index("question_id")
    assert list(table.index) == ["970", "10600", "42", "7"]  # the unpublished question is dropped
    assert table.loc["970", "entropy"] == 0.1624
    # "1" is option index 0 (correct), "3" is index 2 (wrong), "0" is do-not-know, "A" is a letter id
    assert list(table["pred_index"]) == [0, 2, -1, 0]
    assert list(table["validity"]) == ["option", "option", "idk", "option"]
    assert list(table["correct"]) == [True, False, False, True]
    assert table["entropy_options"].isna().all()


def test_import_errors():
    with pytest.raises(CaftError, match=r"lacks column\(s\) \['entropy_value_phi3'"):
        join(_questions(), load_raw(CFG, "qwen2"), CFG, "phi3")
    with pytest.raises(CaftError, match="published entropy table file not found: .*labarss_entropy_phi3.tsv"):
        load_raw(CFG.model_copy(update={"path": str(FIXTURES / "labarss_entropy_phi3.tsv")}), "phi3")
    with pytest.raises(ValueError, match="the path is a DVC dependency and cannot hold {model}"):
        section("entropy.import", path="data/{model}.tsv")
    with pytest.raises(CaftError, match="no question id of the prepared data appears"):
        join(_questions().assign(question_id="zzz"), load_raw(CFG, "qwen2"), CFG, "qwen2")


def test_hub_import_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = section(
        "entropy.import", hub_id="LabARSS/MMLU-Pro-single-token-entropy", config="{model}_w_fallback_if_unknown"
    )
    with pytest.raises(CaftError) as exc:
        load_raw(cfg, "qwen_3b")
    message = str(exc.value)
    assert message.startswith(
        "could not load published entropy table LabARSS/MMLU-Pro-single-token-entropy (qwen_3b_w_fallback_if_unknown) "
        "split 'train' from the Hugging Face Hub"
    )
    assert "\n" not in message
