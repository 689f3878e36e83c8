"""Run configs: pydantic dataclasses loaded from YAML, with ``--set a.b=value`` overrides.

One schema serves every ``ikem-train`` command; each command reads the sections it needs
(pretrain: data, model, optim, run, and umurl with ``model.method: umurl``; distill: data, distill, optim, run; linear: data,
linear, evaluation, run; knn: data, evaluation, run; finetune: data, model, optim,
finetune, evaluation, run). Unknown keys are rejected with the list of valid ones.
Defaults are the paper settings of the six-modality teacher (METHOD.md §6.5, §8, §9).

A YAML file may start with ``include: other.yaml`` (or a list of files), paths relative
to the including file; included files are merged first, the including file wins.

Example::

    cfg = load_config("configs/ntu60-xsub/ikem-teacher.yaml", ["optim.lr=0.05"])
    cfg.optim.lr  # 0.05
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from ikem_data.files import read_regular_file
from ikem_data.names import MODALITIES, STUDENT_MODALITIES, resolve_modalities
from ikem_data.layouts import get_layout
from ikem_data.quoting import quote
from ikem_train.config_strict import RefusedYAML, load_yaml, type_problems
from ikem_train.nets.graph import GRAPH_PARTITIONS, check_partition

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)  # unknown keys and inf/nan values are errors


class ConfigError(ValueError):
    """A config file, key or value is invalid; the message says which and why."""


def _modalities(value):
    try:
        return resolve_modalities(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


@dataclass(config=_STRICT)
class DataConfig:
    """DataLoader and augmentation settings (METHOD.md §4). Negative shear/crop disable them."""

    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(128, gt=0)
    num_workers: int = Field(4, ge=0)
    seed: int = Field(0, ge=0, le=2 ** 32 - 1)  # numpy's SeedSequence and scikit-learn's t-SNE take 0 .. 2**32-1
    shear: float = 0.5
    crop_ratio: int = 6
    pin_memory: bool = True
    num_class: Optional[int] = Field(None, gt=0)  # None: the largest label in the store's splits + 1


#: ``model`` / ``distill`` keys that change how a model computes, not what: a run may resume
#: (and a checkpoint be read) with another value.
EXECUTION_KEYS = frozenset({"stacked_encoders"})


def check_stacked_encoders(value):
    """``value`` if it is ``"auto"``, True or False (not 1 or 0); else ValueError. Used by the
    config and by the models built without one."""
    if value is True or value is False or value == "auto":  # 1 == True, so a Literal alone takes 1
        return value
    raise ValueError(f"stacked_encoders must be auto, true or false, not {quote(value)}")


@dataclass(config=_STRICT)
class ModelConfig:
    """Keyword arguments of ``ikem_train.methods.model.PretrainModel``, named exactly as it takes them."""

    modalities: tuple[str, ...] = MODALITIES
    in_channels: int = Field(3, gt=0)
    hidden_channels: int = Field(16, gt=0)
    hidden_dim: int = Field(256, gt=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    feature_dim: int = Field(128, gt=0)
    mlp: bool = True
    queue_size: int = Field(32768, gt=0)
    momentum: float = Field(0.999, ge=0, le=1)
    temperature: float = Field(0.07, gt=0)
    cross_epoch: int = Field(150, ge=0)
    topk: int = Field(1, gt=0)
    context: bool = True
    ikem: bool = True
    cross_phase_frozen_keys: tuple[str, ...] = ("joint", "bone", "rotation_axis")
    key_init: Literal["copy", "reinit"] = "copy"
    bone_pairs: Literal["ikem", "crossclr"] = "ikem"
    true_timeline: bool = True
    graph_partition: str = GRAPH_PARTITIONS[0]
    layout: Optional[str] = None  # skeleton layout; None: the store's (jobs record the name they used)
    stacked_encoders: Literal["auto", True, False] = "auto"  # one batched pass for all modalities (auto: on CUDA)
    method: Literal["ikem", "umurl"] = "ikem"  # umurl: the ``umurl`` section's network, losses and optimizer

    _check_modalities = field_validator("modalities", mode="before")(_modalities)
    _check_stacked = field_validator("stacked_encoders", mode="before")(check_stacked_encoders)
    _check_graph = field_validator("graph_partition")(check_partition)

    @field_validator("layout")
    @classmethod
    def _check_layout(cls, value):
        return value if value is None else get_layout(value).name

    @field_validator("cross_phase_frozen_keys", mode="before")
    @classmethod
    def _check_frozen(cls, value):
        if value is None or (not isinstance(value, str) and len(value) == 0):
            return ()
        return resolve_modalities(value)


@dataclass(config=_STRICT)
class UmURLConfig:
    """UmURL (``model.method: umurl``; ikem_train/methods/umurl.py): its network, losses,
    augmentations and optimizer. Defaults: the released code (HuiGuanLab/UmURL,
    ``options_pretraining.py``, ``pretrain.py``, ``feeder/augmentations.py``, ``script_pretrain.sh``).
    The schedule (``optim.epochs``, ``optim.milestones``, ``optim.gamma``) is the ``optim``
    section's; ``optim.lr``, ``optim.momentum``, ``optim.weight_decay`` are IKEM's and unused."""

    t_length: int = Field(64, ge=3)  # frames per view (input_size 64); the store's t_length must equal it
    persons: Optional[int] = Field(None, gt=0)  # M of the tokens; None: the store's body slots (jobs record it)
    hidden_size: int = Field(1024, gt=0)
    num_heads: int = Field(1, gt=0)
    num_layers: int = Field(1, gt=0)
    projector_dim: int = Field(4096, gt=0)
    crop_ratio_min: float = Field(0.1, gt=0, le=1)  # l_ratio of the temporal crop-resize
    crop_ratio_max: float = Field(1.0, gt=0, le=1)
    min_crop_frames: int = Field(64, gt=0)  # the crop keeps at least this many of the valid frames
    corrupted_joints: int = Field(15, ge=0)  # joints zeroed or mixed by the joint corruption
    spatial_amplitude: float = Field(1.0, ge=0)  # U(-a, a) entries of the shear and corruption matrices
    consistency_weight: float = Field(5.0, ge=0)  # times (intra + inter)
    variance_weight: float = Field(5.0, ge=0)  # times the hinge on each dimension's std
    covariance_weight: float = Field(1.0, ge=0)
    variance_eps: float = Field(1e-4, gt=0)
    optimizer: Literal["adam", "adamw"] = "adam"  # the code: torch Adam (weight decay added to the gradient)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    warmup_epochs: int = Field(0, ge=0)  # linear warm-up over the first epochs (the code defines one, never calls it)

    @model_validator(mode="after")
    def _check_crop(self):
        if self.crop_ratio_min > self.crop_ratio_max:
            raise ValueError(f"crop_ratio_min {self.crop_ratio_min} > crop_ratio_max {self.crop_ratio_max}")
        return self


@dataclass(config=_STRICT)
class DistillConfig:
    """Keyword arguments of ``ikem_train.methods.model.DistillModel`` (METHOD.md §7), minus the teacher."""

    student_modalities: tuple[str, ...] = STUDENT_MODALITIES
    teacher_mode: Literal["train", "eval"] = "train"
    omega_queue: Literal["bone", "angular_velocity"] = "bone"
    student_dim: int = Field(768, gt=0)
    queue_size: int = Field(32768, gt=0)
    temperature: float = Field(0.07, gt=0)
    topk: int = Field(1, gt=0)
    context: bool = True
    stacked_encoders: Literal["auto", True, False] = "auto"  # teacher, students: one batched pass each (auto: on CUDA)

    _check_modalities = field_validator("student_modalities", mode="before")(_modalities)
    _check_stacked = field_validator("stacked_encoders", mode="before")(check_stacked_encoders)


@dataclass(config=_STRICT)
class OptimConfig:
    """SGD with a step schedule as a function of the 1-based epoch (METHOD.md §6.5)."""

    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    nesterov: bool = False
    milestones: tuple[int, ...] = (250,)
    gamma: float = Field(0.1, gt=0)
    epochs: int = Field(300, gt=0)


@dataclass(config=_STRICT)
class LinearConfig:
    """Linear evaluation (METHOD.md §8): frozen encoders, SGD on new classifiers."""

    lr: float = Field(3.0, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    nesterov: bool = False
    milestones: tuple[int, ...] = (80,)
    gamma: float = Field(0.1, gt=0)
    epochs: int = Field(100, gt=0)
    batch_size: int = Field(128, gt=0)
    eval_interval: int = Field(5, gt=0)


@dataclass(config=_STRICT)
class EvaluationConfig:
    """Frozen-feature evaluation shared by linear and KNN (and fine-tuning's reports)."""

    bn_recalibrate: bool = False  # recompute BN running statistics on the train split first
    knn_k: int = Field(1, gt=0)  # neighbours of the cosine k-NN (UmURL's protocol: 1)
    collapse_threshold: float = Field(0.01, ge=0)  # spread below this: the features are collapsed


@dataclass(config=_STRICT)
class FinetuneConfig:
    """Fine-tuning and semi-supervised evaluation; the schedule is the ``optim`` section."""

    label_fraction: Optional[float] = Field(None, gt=0, le=1)  # None: every train label
    eval_interval: int = Field(5, gt=0)
    # dropout of the encoders while fine-tuning; None: the model's (the checkpoint's, or
    # model.dropout from scratch), which a checkpoint's model section would otherwise fix
    dropout: Optional[float] = Field(None, ge=0, lt=1)
    # the schedule's length and lr steps; None: optim.epochs / optim.milestones. A longer run
    # on the pretraining's milestones would spend its added epochs at the stepped-down lr.
    epochs: Optional[int] = Field(None, gt=0)
    milestones: Optional[tuple[int, ...]] = None


@dataclass(config=_STRICT)
class RunSettings:
    """How a run executes: device, checkpoints, logging, processes (under torchrun)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    amp: bool = True
    save_interval: int = Field(30, gt=0)
    keep_last: Optional[int] = Field(None, gt=0)  # keep only the newest N epochNNN.pt (None: all)
    max_steps_per_epoch: Optional[int] = Field(None, gt=0)
    tensorboard: bool = False
    progress: bool = True
    log_interval: int = Field(50, gt=0)  # steps between reads of the loss (progress bar, NaN check)
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # torchrun jobs: auto = NCCL on CUDA, gloo on CPU
    # seconds a collective may wait for the other processes (at most 10^9: a datetime.timedelta overflows far above)
    dist_timeout: float = Field(600.0, gt=0, le=1e9)
    sync_bn: bool = True  # torchrun jobs: BatchNorm statistics over the global batch


@dataclass(config=_STRICT)
class Config:
    """The whole run config; see the module docstring."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    linear: LinearConfig = dataclasses.field(default_factory=LinearConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    run: RunSettings = dataclasses.field(default_factory=RunSettings)
    umurl: UmURLConfig = dataclasses.field(default_factory=UmURLConfig)

    @model_validator(mode="after")
    def _check_queues(self):
        batch = self.data.batch_size
        for section in ("model", "distill"):
            queue = getattr(self, section).queue_size
            if queue % batch:
                raise ValueError(
                    f"{section}.queue_size={queue} is not divisible by data.batch_size={batch} "
                    "(the queue pointer advances by one full batch per step)"
                )
        return self


_ADAPTER = TypeAdapter(Config)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "distill": DistillConfig,
    "optim": OptimConfig,
    "linear": LinearConfig,
    "evaluation": EvaluationConfig,
    "finetune": FinetuneConfig,
    "run": RunSettings,
    "umurl": UmURLConfig,
}


def _fields_of(path):
    """Valid keys at a location of the schema (``[]`` = top level)."""
    cls = Config if not path else _SECTIONS.get(path[0])
    return [f.name for f in dataclasses.fields(cls)] if cls is not None and len(path) <= 1 else None


def _format_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        where = ".".join(loc) or "config"
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            valid = _fields_of(loc[:-1])
            lines.append(f"unknown key {quote(where)}; valid keys here: {', '.join(valid or [])}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg} (got {quote(err.get('input'))})" if loc else msg)
    return "; ".join(lines)


def config_from_dict(data: dict) -> Config:
    """Validate a nested dict into a :class:`Config`: YAML files, ``--set`` values and the
    config inside a checkpoint all pass here.

    Types are checked as declared before pydantic converts anything
    (:func:`ikem_train.config_strict.type_problems`): a bool is not a number, ``"3"`` is
    not an int, ints fit in 64 bits, floats are finite and within float32's range.

    Raises:
        ConfigError: unknown keys (listing the valid ones) or bad values, each naming its
            ``section.key`` and quoting the value (at most a few dozen characters).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    problems = type_problems(data, Config)
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def config_to_dict(cfg: Config) -> dict:
    """The config as plain dicts, lists and scalars (safe for YAML, JSON and torch.save)."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path, _seen=()) -> dict:
    """Read a config YAML file, resolving ``include:`` (relative to the file).

    The file is parsed by :class:`ikem_train.config_strict.StrictLoader`: no aliases,
    anchors, tags, merge keys or duplicate keys.

    Raises:
        ConfigError: missing file or one that is not a regular file (a FIFO would block),
            YAML syntax error or a refused construct (file and line named), include
            cycle, non-mapping content.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    resolved = path.resolve()
    if resolved in _seen:
        raise ConfigError(f"include cycle through {path}")
    try:
        text = read_regular_file(path, "config file").decode("utf-8")
    except OSError as exc:  # read_regular_file's own text names the path and what it is
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}" if exc.strerror else str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: a config file must be UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = load_yaml(text, path) or {}
    except RefusedYAML as exc:
        raise ConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict = {}
    for inc in includes:
        merged = _merge(merged, read_yaml(path.parent / inc, _seen + (resolved,)))
    return _merge(merged, data)


def apply_overrides(data: dict, overrides) -> dict:
    """Apply ``a.b=value`` strings; each value is parsed as YAML by the config files'
    strict loader (text that is not YAML stays a string).

    Raises:
        ConfigError: an override without ``=`` or with an empty key; a value using YAML
            aliases, anchors, tags or duplicate keys.
    """
    out = copy.deepcopy(data)
    for item in overrides or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"bad override {quote(item)}: expected section.key=value, e.g. optim.lr=0.05")
        try:
            value = load_yaml(raw, f"--set {quote(item, 60)}") if raw.strip() else None
        except RefusedYAML as exc:
            raise ConfigError(str(exc)) from None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"bad override {quote(item)}: {quote(part)} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(path=None, overrides=(), base: dict | None = None) -> Config:
    """Load a config: defaults < ``base`` dict < YAML file < ``--set`` overrides.

    Args:
        path: YAML file or None for the defaults.
        overrides: iterable of ``"section.key=value"`` strings.
        base: optional nested dict applied before the file (e.g. a checkpoint's config).

    Raises:
        ConfigError: see :func:`read_yaml`, :func:`apply_overrides`, :func:`config_from_dict`.
    """
    data = copy.deepcopy(base) if base else {}
    if path is not None:
        data = _merge(data, read_yaml(path))
    data = apply_overrides(data, overrides)
    return config_from_dict(data)
