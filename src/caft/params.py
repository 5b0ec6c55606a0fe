"""The one typed, validated view of params.yaml.

Every stage loads its parameters here. Two reasons: `dvc exp run -S lr=1e-6` writes YAML 1.2 floats that
PyYAML reads back as strings (pydantic coerces them), and a typo or an out-of-range value should stop a stage
with one clear line instead of surfacing as a KeyError deep inside a run.

Only types and the values' own rules live here (pydantic): the names params take from a registry (strategies, data
sources, teacher backends, estimators) are checked against it in `caft.names`, so a stage depends on params.py
without depending on every registry. The one registry read here is `caft.prompts`, a leaf of texts:
`prompt.dataset: auto` resolves at load, because every stage that builds a prompt needs the resolved name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from caft.errors import CaftError
from caft.prompts import GENERIC, PROMPT_SETS, dataset_names

# Environment variable names as shells write them; API keys have lower case or dashes (sk-..., hex digests).
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Settings(_Strict):
    """The base of a params block that an extension added as one registry entry declares (a data source's under
    `data.`, an estimator family's under `estimators.`): strict, so a misspelt key is refused. The sections that
    hold such blocks keep them as they are; `caft.names` validates each against its entry's model."""


def declared_block(section: BaseModel, name: str, model: type[Settings] | None, what: str) -> Settings:
    """The block `name` of `section` that an entry added to a registry declares (`what` the entry is: a data
    source, a teacher backend, an estimator family), validated by the entry's own model."""
    block = (section.model_extra or {}).get(name)
    if model is None or block is None:
        raise CaftError(f"{what} {name!r}: its params block is missing from params.yaml")
    return model.model_validate(block)


class SyntheticData(_Strict):
    """Offline MMLU-Pro-shaped questions whose difficulty is the number of reasoning steps."""

    n_questions: int = Field(ge=1)
    min_steps: int = Field(ge=1)
    max_steps: int = Field(ge=1, le=8)
    min_options: int = Field(ge=2, le=10)
    max_options: int = Field(ge=2, le=10)
    families: list[Literal["arithmetic", "units", "chain"]]

    @model_validator(mode="after")
    def _ranges(self) -> SyntheticData:
        if self.min_steps > self.max_steps:
            raise ValueError("min_steps must not exceed max_steps")
        if self.min_options > self.max_options:
            raise ValueError("min_options must not exceed max_options")
        if not self.families:
            raise ValueError("families must not be empty")
        return self


class HubData(_Strict):
    repo: str
    revision: str
    split: str


class HubSplits(_Strict):
    """A hub dataset that ships its own train and test splits (kept as they are: no carve). `repo` may also be a
    local folder laid out as the hub repo (the tests' fixtures), read through the same `datasets` call."""

    repo: str
    config: str | None
    revision: str
    train_split: str
    test_split: str


class MedMCQAData(HubSplits):
    # `choice_type: multi` rows carry one gold letter too and the authors keep them (so the test set is the whole
    # 4,183-row validation split); true leaves them out.
    drop_multi: bool


class FileData(_Strict):
    path: str | None
    # error: the first bad row stops prepare (named, with its problem); skip: bad rows are left out; repair:
    # options written as a Python list with unescaped quotes (the authors' TSVs) are re-split, other bad rows
    # stop prepare. Rows skipped or repaired are named on stderr and counted in metrics/prepare.json.
    bad_rows: Literal["error", "skip", "repair"]


class DataParams(_Strict):
    """The question source and the carve. A source that ships with caft has its block typed here; one added as an
    entry brings its own block (`caft.prepare.Source.settings`)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    source: str  # a key of caft.prepare.SOURCES (caft.names checks it)
    test_fraction: float = Field(gt=0, lt=1)
    categories: list[str]
    max_train: int | None = Field(ge=1)
    max_test: int | None = Field(ge=1)
    synthetic: SyntheticData
    hf: HubData
    file: FileData
    gsm8k: HubSplits
    medmcqa: MedMCQAData

    @model_validator(mode="after")
    def _file_needs_path(self) -> DataParams:
        if self.source == "file" and not self.file.path:
            raise ValueError("data.source=file needs data.file.path")
        return self


class ModelSpec(_Strict):
    """How to find one student model; `ref` grammar is documented in caft.models."""

    ref: str
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    # `{model}` in published tables (entropy.import): the authors name columns by model type
    # (entropy_value_qwen2, entropy_value_phi3), not by our student keys. None = the student's key.
    import_key: str | None = None
    # Parameter count, for `caft plan`'s GPU-hour estimate only (null: unknown, no estimate). It decides nothing
    # about the weights, so `loading()` leaves it out of every fingerprint and model card.
    n_parameters: float | None = Field(default=None, gt=0)
    # The leaves dvc.yaml lists as params of the stages that load a student (entropy, train, eval, the CoT
    # estimator): DVC refuses a stage whose params are missing from params.yaml, so a student's entry writes each.
    STAGE_PARAMS: ClassVar[tuple[str, ...]] = ("ref", "revision", "dtype", "trust_remote_code", "import_key")

    def loading(self) -> dict:
        """What decides which weights load and how: the checkpoint fingerprint, the entropy store's key and the
        trained model's card record this, never the plan-only size."""
        return self.model_dump(exclude={"n_parameters"})


class PromptParams(_Strict):
    variant: Literal["plain", "fallback"]
    option_ids: Literal["numeric", "letter"]
    subject: bool
    # Opens the assistant turn of the answer-only prompt (entropy, answer-only targets, direct eval), so a small
    # model answers at once instead of writing prose first; `{expression}` quotes the question's formula.
    answer_prefix: str
    # Whose prompt texts: `generic` (MMLU-Pro's, above), a dataset's own (caft.prompts.PROMPT_SETS: gsm8k,
    # medmcqa), or `auto` (params.yaml): the data source's own set when it has one, else generic.
    dataset: str

    @field_validator("answer_prefix")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        try:
            value.format(expression="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"may only use the field {{expression}} ({exc!r})") from None
        return value


class TableSource(_Strict):
    """A published table: a hub dataset (id, config, revision, split) when `hub_id` is set, else a local file.
    The file's path is a literal one: dvc.yaml lists it as the reading stage's dependency."""

    path: str | None
    hub_id: str | None
    config: str | None
    revision: str | None
    split: str
    id_column: str

    @field_validator("path")
    @classmethod
    def _literal_path(cls, value: str | None) -> str | None:
        if value and "{model}" in value:
            raise ValueError(
                "the path is a DVC dependency and cannot hold {model}: put every student's columns in one table "
                "(score_column and answer_column may hold {model})"
            )
        return value


class EntropyImport(TableSource):
    """Published per-question entropies. Column names and `config` may contain `{model}`: the student's
    `models.<name>.import_key`, or its key."""

    score_column: str
    answer_column: str


class EntropyParams(_Strict):
    source: Literal["model", "import"]
    batch_size: int = Field(ge=1)
    max_length: int = Field(ge=8)
    id_collision: Literal["error", "first", "skip"]
    device: Literal["auto", "cpu", "cuda", "mps"]
    # Where the entropy is read. `next`: the first token after the prompt (and prompt.answer_prefix). `marker`
    # (the authors' GSM8K way): greedy generation of max_new_tokens; the first token inside the first `[[...]]`
    # (the answer prefix counts: "[[" opens it); rows without a marker are invalid.
    locate: Literal["next", "marker"]
    # number-format questions and `marker`: the greedy answer is read from this many new tokens
    max_new_tokens: int = Field(ge=1)
    import_: EntropyImport = Field(alias="import")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _import_needs_location(self) -> EntropyParams:
        if self.source == "import" and not (self.import_.path or self.import_.hub_id):
            raise ValueError("entropy.source=import needs entropy.import.path or entropy.import.hub_id")
        return self


class SplitParams(_Strict):
    """Bands by complexity: easy < easy_threshold <= medium < threshold <= hard (in `units`)."""

    threshold: float
    easy_threshold: float
    units: Literal["quantile", "normalized", "nats"]
    # Any estimator's name: single_token_entropy (the paper), single_token_entropy_options, cot_<aggregate>,
    # masj_education_level, masj_reasoning_steps, or an imported one. Categorical ones band by their levels.
    estimator: str
    max_train: int | None = Field(ge=1)
    train_per_band: int | None = Field(ge=1)
    val_per_band: int = Field(ge=0)
    # A validation carve drawn from the training pool before banding (seeded): it does not move with the
    # thresholds, so a threshold sweep does not retrain sft / distill for it. The paper's carve is per band.
    val_size: int = Field(ge=0)
    balanced_test: bool
    random_control: bool
    # The authors' released medium band had no upper bound (~34 % of its rows lie above the hard cut).
    # Off: disjoint bands. On: medium's training rows are drawn from everything at or above the easy cut.
    compat_medium_overlap: bool

    @model_validator(mode="after")
    def _bands(self) -> SplitParams:
        """Thresholds that describe three ordered bands, and what the compat switch needs."""
        high = 1.0 if self.units in ("quantile", "normalized") else float("inf")
        for name in ("easy_threshold", "threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= high:
                raise ValueError(f"{name}={value} is out of range for units={self.units} ([0.0, {high}])")
        if self.easy_threshold > self.threshold:
            raise ValueError(f"easy_threshold={self.easy_threshold} is above threshold={self.threshold}")
        if self.val_size and self.val_per_band:
            raise ValueError("split.val_size and split.val_per_band are two validation carves: set one of them")
        if self.compat_medium_overlap and self.train_per_band is None:
            raise ValueError("split.compat_medium_overlap reproduces the authors' capped bands: set train_per_band")
        return self


class OpenAIBackend(_Strict):
    """Any OpenAI-compatible chat-completions endpoint. The key is read from the environment variable named
    here and never stored anywhere else."""

    base_url: str
    model: str
    api_key_env: str
    concurrency: int = Field(ge=1)
    timeout_s: float = Field(gt=0)
    max_retries: int = Field(ge=0)
    backoff_base_s: float = Field(ge=0)
    backoff_max_s: float = Field(ge=0)
    # A server's Retry-After is honoured up to this many seconds (a misbehaving proxy can ask for hours).
    retry_after_max_s: float = Field(ge=0)

    @field_validator("api_key_env", mode="before")
    @classmethod
    def _a_variable_name(cls, value: object) -> object:
        """Params are committed and logged: a key pasted here must be refused without being echoed."""
        if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
            raise ValueError(
                "must be the NAME of an environment variable (A-Z, 0-9, _; e.g. OPENROUTER_API_KEY), and the value "
                "given is not one (not shown: it may be a key; put the key in the environment instead)"
            )
        return value


class TeacherHF(_Strict):
    ref: str
    revision: str | None
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    trust_remote_code: bool
    batch_size: int = Field(ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"]


class TeacherImport(TableSource):
    """Published traces (e.g. the authors' DeepSeek-V3 responses), joined on question id."""

    text_column: str
    label: str


class GenerationParams(_Strict):
    """What a call to a generating backend takes: the settings the teacher and the judge share. The backends that
    ship with caft have their blocks typed here; one added as an entry brings its own block
    (`caft.teacher.backends.Backend.settings`)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    backend: str  # a key of caft.teacher.backends.BACKENDS (caft.names checks it)
    max_tokens: int = Field(ge=1)
    temperature: float | None = Field(ge=0)  # null: not sent, the provider's default (the authors' EACL runs)
    top_p: float = Field(gt=0, le=1)
    seed: int | None
    price_prompt_per_m: float = Field(ge=0)
    price_completion_per_m: float = Field(ge=0)
    openai: OpenAIBackend
    hf: TeacherHF

    def sampling(self) -> dict:
        """What, besides the prompt and the model, determines a response (part of the cache key)."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}

    def prices(self) -> tuple[float, float]:
        """US dollars per million prompt and completion tokens."""
        return self.price_prompt_per_m, self.price_completion_per_m


class TeacherParams(GenerationParams):
    marker: Literal["brackets", "answer_is"]
    keep: Literal["correct", "all"]
    subject: bool
    # Items still failing after every retry: beyond this many the teacher stage stops (non-zero) instead of
    # training without them; the next run requests only those items.
    max_failures: int = Field(ge=0)
    import_: TeacherImport = Field(alias="import")

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="after")
    def _import_needs_location(self) -> TeacherParams:
        if self.backend == "import" and not (self.import_.path or self.import_.hub_id):
            raise ValueError("teacher.backend=import needs teacher.import.path or teacher.import.hub_id")
        return self


class LoraParams(_Strict):
    enabled: bool
    r: int = Field(ge=1)
    alpha: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str]


class TrainParams(_Strict):
    """Training recipe shared by every strategy; `epochs.<strategy>` lists epochs per phase."""

    epochs: dict[str, list[float]]
    learning_rate: float = Field(gt=0)
    batch_size: int = Field(ge=1)
    grad_accum: int = Field(ge=1)
    max_length: int = Field(ge=16)
    max_grad_norm: float = Field(gt=0)
    warmup_steps: float = Field(ge=0)  # steps, or a ratio of all steps when < 1
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"]
    weight_decay: float = Field(ge=0)
    gradient_checkpointing: bool
    save_steps: int = Field(ge=1)
    answer_variant: Literal["plain", "fallback"]
    lora: LoraParams
    accelerate_config: str


class EvalParams(_Strict):
    backend: Literal["hf", "vllm"]
    batch_size: int = Field(ge=1)
    max_new_tokens_direct: int = Field(ge=1)
    max_new_tokens_cot: int = Field(ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"]
    seed: int  # for accuracy_tiger's random guesses
    # The authors divided by *parsed* answers only. On: the report adds that number (clearly labelled).
    compat_parsed_only: bool
    # Accuracy on the validation carve after every epoch of every phase (the paper's curves), during training.
    every_epoch: bool
    # ... and on all test questions too (the report keeps the balanced ones): off, the test set is seen once.
    every_epoch_test: bool
    # The GPU memory fraction the per-epoch pass's vLLM engine takes beside the model being trained.
    vllm_memory_epoch: float = Field(gt=0, lt=1)
    # Which weights the train stage keeps (and the test set sees): the last epoch's (the paper), or the epoch
    # with the best validation accuracy (earliest on a tie; needs every_epoch).
    select: Literal["final", "best"]
    n_boot: int = Field(ge=100)  # bootstrap resamples of the report's paired differences


class EstimatorImport(TableSource):
    """A published estimator (e.g. LabARSS/MMLU-Pro-education-level); text levels map to their index in
    `levels`."""

    students: list[str]  # the students whose rows it is joined to
    score_column: str
    name: str
    levels: list[str]


class FamilyParams(Settings):
    """What every estimator family's params block holds: the students it scores. A family added as one registry
    entry declares its block as a subclass (`caft.estimators.registry.Family.settings`)."""

    students: list[str]


class CotEstimatorParams(FamilyParams):
    """The student's CoT-entropy aggregates (`caft.estimators.cot`)."""

    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"]


class JudgeParams(GenerationParams):
    """Model-as-judge (`caft.estimators.judge`): a generating teacher backend, one stage per student x scale."""

    students: list[str]
    # the scales of caft.estimators.judge.SCALES (a test keeps the two in step)
    scales: list[Literal["education_level", "reasoning_steps"]]


class EstimatorParams(_Strict):
    """One block per family of `caft.estimators.registry.FAMILIES`; each runs for the students it lists. The blocks
    of the families caft ships are typed here; a family added as one entry brings its own block (`Settings`)."""

    max_questions: int | None = Field(ge=1)  # the same seeded subset for every family
    n_boot: int = Field(ge=10)
    cot: CotEstimatorParams
    judge: JudgeParams
    import_: EstimatorImport = Field(alias="import")

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Params(_Strict):
    seed: int  # data: the carve, the training pool, the validation and balanced test draws
    # Training seeds: every (student, strategy) is trained and evaluated once per seed (LoRA init, data order,
    # dropout, and the random control's draw), on the same data; the report averages over them.
    seeds: list[int] = Field(min_length=1)
    students: list[str] = Field(min_length=1)
    models: dict[str, ModelSpec]
    data: DataParams
    prompt: PromptParams
    entropy: EntropyParams
    split: SplitParams
    strategies: list[str]
    teacher: TeacherParams
    train: TrainParams
    eval: EvalParams
    estimators: EstimatorParams

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds {value} repeat a seed (each one names a training run)")
        return value

    @model_validator(mode="after")
    def _prompt_set(self) -> Params:
        """`prompt.dataset: auto` becomes the source's own prompt set; a set's own option ids and marker are
        what its texts ask for, so params that contradict them are refused (one line, before any stage runs)."""
        if self.prompt.dataset == "auto":
            self.prompt.dataset = self.data.source if self.data.source in PROMPT_SETS else GENERIC
        if self.prompt.dataset not in dataset_names():
            raise ValueError(
                f"prompt.dataset={self.prompt.dataset} is unknown (known: auto, {', '.join(dataset_names())})"
            )
        own = PROMPT_SETS.get(self.prompt.dataset)
        if own is not None and own.marker != self.teacher.marker:
            raise ValueError(
                f"prompt.dataset={self.prompt.dataset}: its CoT prompt asks for the {own.marker} marker; "
                f"set teacher.marker={own.marker}"
            )
        return self

    @model_validator(mode="after")
    def _students_known(self) -> Params:
        unknown = [s for s in self.students if s not in self.models]
        if unknown:
            raise ValueError(f"students {unknown} have no entry under models (known: {sorted(self.models)})")
        for name in self.students:
            left_out = [key for key in ModelSpec.STAGE_PARAMS if key not in self.models[name].model_fields_set]
            if left_out:
                raise ValueError(
                    f"models.{name} leaves out {', '.join(left_out)}: the stages read each one as a DVC param "
                    "(write it, null where unused, as under models.smollm2)"
                )
        self._epoch_eval()
        return self

    def _epoch_eval(self) -> None:
        """Per-epoch accuracy needs questions to measure it on, and picking the best epoch needs the curve."""
        if self.eval.every_epoch and not (self.split.val_size or self.split.val_per_band):
            raise ValueError("eval.every_epoch needs a validation carve: set split.val_size or split.val_per_band")
        if self.eval.every_epoch_test and not self.eval.every_epoch:
            raise ValueError("eval.every_epoch_test answers the test set after every epoch: set eval.every_epoch=true")
        if self.eval.select == "best" and not self.eval.every_epoch:
            raise ValueError("eval.select=best picks an epoch by validation accuracy: set eval.every_epoch=true")

    def model(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise CaftError(f"unknown model {name!r}; params.yaml models are {sorted(self.models)}")
        return self.models[name]


_NAMES_A_KEY = re.compile(r"^[a-z_]+=")


def parse_params(raw: dict) -> Params:
    """Validate a params mapping; any problem becomes one CaftError line naming the key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise CaftError(invalid(exc)) from None


def invalid(exc: ValidationError, section: str = "") -> str:
    """A validation error as one line naming the key (`section`: where the validated block sits in params)."""
    err = exc.errors()[0]
    where = ".".join([section, *(str(p) for p in err["loc"])] if section else [str(p) for p in err["loc"]])
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    # A section's own check that starts with one of its keys ("threshold=2 is ...") names it in full.
    sep = "." if where and _NAMES_A_KEY.match(msg) else ": "
    return f"invalid params: {where + sep if where else ''}{msg}{more}"


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise CaftError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CaftError(f"params file {path} is not valid YAML: {exc}") from None
    return parse_params(raw)
