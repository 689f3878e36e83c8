"""Run configs: YAML loading, includes, --set overrides, unknown keys, bad values."""

from pathlib import Path

import pytest

from ikem_train.config import ConfigError, apply_overrides, config_from_dict, config_to_dict, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_are_the_paper_teacher():
    cfg = load_config()
    assert cfg.optim.lr == 0.1 and cfg.optim.epochs == 300 and cfg.optim.milestones == (250,)
    assert cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 1e-4 and cfg.optim.nesterov is False
    assert cfg.model.queue_size == 32768 and cfg.model.cross_epoch == 150 and len(cfg.model.modalities) == 6
    assert cfg.linear.lr == 3.0 and cfg.linear.epochs == 100 and cfg.linear.milestones == (80,)
    assert cfg.linear.weight_decay == 0.0


@pytest.mark.parametrize("bench,classes", [("ntu60-xsub", 60), ("ntu60-xview", 60), ("ntu120-xsub", 120), ("ntu120-xset", 120)])
def test_paper_configs(bench, classes):
    teacher = load_config(CONFIGS / bench / "ikem-teacher.yaml")
    assert teacher.optim.epochs == 300 and teacher.model.cross_epoch == 150 and teacher.optim.milestones == (250,)
    assert teacher.model.modalities == ("joint", "motion", "bone", "acceleration", "rotation_axis", "angular_velocity")
    student = load_config(CONFIGS / bench / "ikem-student.yaml")
    assert student.optim.epochs == 150 and student.optim.milestones == (125,)
    assert student.distill.teacher_mode == "train" and student.distill.omega_queue == "bone"
    sclr = load_config(CONFIGS / bench / "skeletonclr.yaml")
    assert sclr.model.modalities == ("joint",)
    crossclr = load_config(CONFIGS / bench / "crossclr.yaml")  # three streams, cross phase on, IKEM off
    assert crossclr.model.modalities == ("joint", "motion", "bone") and crossclr.model.ikem is False
    assert crossclr.model.cross_epoch == 150 < crossclr.optim.epochs == 300
    assert crossclr.model.cross_phase_frozen_keys == ("joint", "bone") and crossclr.data.num_class == classes
    linear = load_config(CONFIGS / bench / "linear.yaml")
    assert (linear.linear.lr, linear.linear.epochs, linear.linear.milestones) == (3.0, 100, (80,))
    assert linear.data.num_class == classes


def test_tiny_config_runs_the_cross_phase():
    cfg = load_config(CONFIGS / "tiny-cpu.yaml")
    assert cfg.model.cross_epoch < cfg.optim.epochs
    assert cfg.model.queue_size % cfg.data.batch_size == 0
    assert cfg.run.device == "cpu" and cfg.data.num_workers == 0


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(None, ["optim.lr=0.05", "optim.milestones=[10, 20]", "model.modalities=joint,omega",
                             "run.compile=true", "model.cross_phase_frozen_keys=[]"])
    assert cfg.optim.lr == 0.05 and cfg.optim.milestones == (10, 20)
    assert cfg.model.modalities == ("joint", "angular_velocity")
    assert cfg.run.compile is True and cfg.model.cross_phase_frozen_keys == ()


def test_include_and_override_order(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 0.2\n  epochs: 7\n")
    (tmp_path / "run.yaml").write_text("include: base.yaml\noptim:\n  epochs: 9\n")
    cfg = load_config(tmp_path / "run.yaml", ["optim.epochs=11"])
    assert cfg.optim.lr == 0.2 and cfg.optim.epochs == 11
    assert load_config(tmp_path / "run.yaml").optim.epochs == 9


@pytest.mark.parametrize("override,needle", [
    (["model.qeue_size=64"], "unknown key 'model.qeue_size'; valid keys here: modalities"),
    (["optimizer.lr=1"], "unknown key 'optimizer'; valid keys here: data, model, distill, optim, linear, evaluation, finetune, run"),
    (["optim.lr=-1"], "optim.lr"),
    (["optim.lr=fast"], "optim.lr"),
    (["run.device=tpu"], "run.device"),
    (["model.modalities=joint,jnt"], "unknown modality 'jnt'"),
    (["model.queue_size=100"], "not divisible by data.batch_size=128"),
    (["distill.queue_size=96", "data.batch_size=64"], "distill.queue_size=96"),
    (["optim"], "bad override"),
    (["optim.lr.x=1"], "optim.lr: expected a number, got {'x': 1} (dict)"),
    (["optim.lr=1", "optim.lr.x=1"], "is a value, not a section"),
])
def test_bad_input_is_a_clear_error(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    assert needle in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "loop.yaml").write_text("include: loop.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "loop.yaml")


def test_round_trip_through_plain_dict():
    cfg = load_config(None, ["optim.lr=0.3", "model.modalities=[bone]"])
    plain = config_to_dict(cfg)
    assert plain["model"]["modalities"] == ["bone"] and isinstance(plain["optim"]["milestones"], list)
    assert config_from_dict(plain) == cfg
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


def test_every_shipped_config_passes_the_strict_reading():
    """The configs ikem ships load with no alias, tag, repeated key or loosely typed value."""
    shipped = sorted(CONFIGS.rglob("*.yaml")) + sorted((CONFIGS.parent / "ikem_train").glob("*.yaml"))
    assert len(shipped) > 20
    for path in shipped:
        load_config(path)  # raises ConfigError naming the file and line or the key
