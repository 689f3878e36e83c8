"""`ikem-train pretrain | distill | linear | fuse`: thin wiring over ikem_train.

Heavy imports (torch, zarr, ikem_train) stay inside the command bodies so that
`ikem-train --help` is fast. Bad input becomes a one-line ClickException.
"""

from __future__ import annotations

import functools

import click

_HELP_SET = "Override a config value, e.g. --set optim.lr=0.05 (value parsed as YAML; repeatable)."


def _common(func):
    """Options every command shares: --store, --benchmark, --config, --set, --run, --device."""
    options = [
        click.option("--store", required=True, type=click.Path(), help="ikem store (zarr folder or .h5 file)."),
        click.option("--benchmark", required=True, help="Benchmark split in the store, e.g. ntu60-xsub."),
        click.option("--config", "config_path", type=click.Path(), default=None,
                     help="YAML run config (see configs/); defaults are the paper settings."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_HELP_SET),
        click.option("--run", "run_dir", required=True, type=click.Path(),
                     help="Run folder for checkpoints, metrics and results; must be new or empty unless --resume."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
                     help="Training device (default: the config's run.device, normally auto)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _friendly(func):
    """Turn the library's known errors into ClickException (one line, non-zero exit)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
            if type(exc).__name__ not in _FRIENDLY and not isinstance(exc, (KeyError, FileNotFoundError)):
                raise
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise click.ClickException(str(message).replace("\n", " ")) from None

    return wrapper


# Error types whose message is written for users; anything else keeps its traceback (a bug).
_FRIENDLY = {"ConfigError", "TrainingError", "CheckpointError", "LinearEvalError", "StoreError", "FuseError",
             "ValueError"}


def _overrides(overrides, device=None, compile_=False, modalities=None, section="model"):
    out = list(overrides)
    if modalities is not None:
        from ikem_data.names import resolve_modalities

        try:
            names = resolve_modalities(modalities)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--modalities") from None
        out.append(f"{section}.modalities=[{','.join(names)}]")
    if device is not None:
        out.append(f"run.device={device}")
    if compile_:
        out.append("run.compile=true")
    return out


def _resume_base(run_dir, resume):
    """The config saved in run_dir/last.pt when resuming (the file given with --config wins)."""
    if not resume:
        return None
    from pathlib import Path

    from ikem_train.checkpoint import load_checkpoint

    path = Path(run_dir) / "last.pt"
    if not path.is_file():
        raise click.ClickException(f"--resume: no {path} to continue from")
    return load_checkpoint(path)["config"]


@click.command()
@_common
@click.option("--modalities", default=None,
              help="Comma-separated modalities, or 'all' for the six (alias omega = angular_velocity). "
                   "Default: the config's model.modalities.")
@click.option("--resume", is_flag=True, help="Continue the run in --run from its last.pt, exactly.")
@click.option("--compile", "compile_", is_flag=True, help="Run the model through torch.compile.")
@_friendly
def pretrain(store, benchmark, config_path, overrides, run_dir, device, modalities, resume, compile_):
    """Self-supervised pretraining: SkeletonCLR (one modality), CrosSCLR or IKEM (several)."""
    from dataclasses import asdict

    from ikem_train.checkpoint import seed_everything
    from ikem_train.config import load_config
    from ikem_train.data import PretrainDataset
    from ikem_train.loop import prepare_run_dir, train
    from ikem_train.model import PretrainModel

    cfg = load_config(config_path, _overrides(overrides, device, compile_, modalities), _resume_base(run_dir, resume))
    dataset = PretrainDataset(store, benchmark, "train", shear=cfg.data.shear, crop_ratio=cfg.data.crop_ratio,
                              seed=cfg.data.seed)
    run = prepare_run_dir(run_dir, resume)
    seed_everything(cfg.data.seed)
    model = PretrainModel(**asdict(cfg.model))
    click.echo(f"pretraining {', '.join(cfg.model.modalities)} on {benchmark} ({len(dataset)} train samples) "
               f"for {cfg.optim.epochs} epochs into {run}")
    train(model, dataset, cfg, run, kind="pretrain", modalities=cfg.model.modalities, resume=resume,
          extra={"store": str(store), "benchmark": benchmark}, log=click.echo)
    click.echo(f"done: {run / 'last.pt'}")


@click.command()
@_common
@click.option("--teacher", type=click.Path(), default=None,
              help="Six-modality pretrain checkpoint (e.g. runs/teacher/last.pt); with --resume, defaults to the one recorded.")
@click.option("--resume", is_flag=True, help="Continue the run in --run from its last.pt, exactly.")
@click.option("--compile", "compile_", is_flag=True, help="Run the model through torch.compile.")
@_friendly
def distill(store, benchmark, config_path, overrides, run_dir, device, teacher, resume, compile_):
    """Relational distillation of a six-modality teacher into joint/motion/bone students."""
    from dataclasses import asdict

    from ikem_data.names import MODALITIES
    from ikem_train.checkpoint import CheckpointError, load_checkpoint, seed_everything
    from ikem_train.config import config_from_dict, config_to_dict, load_config
    from ikem_train.data import PretrainDataset
    from ikem_train.loop import prepare_run_dir, train
    from ikem_train.model import DistillModel

    base = _resume_base(run_dir, resume)
    if teacher is None:
        if not resume:
            raise click.UsageError("--teacher is required (a six-modality pretrain checkpoint)")
        from pathlib import Path

        teacher = load_checkpoint(Path(run_dir) / "last.pt").get("teacher")
    tck = load_checkpoint(teacher)
    if tck["kind"] != "pretrain":
        raise CheckpointError(f"{teacher} is a {tck['kind']!r} checkpoint (a student cannot be a teacher); "
                              "give a six-modality pretrain checkpoint")
    have = list(tck["modalities"])
    if set(have) != set(MODALITIES):
        missing = [m for m in MODALITIES if m not in have]
        raise CheckpointError(f"{teacher} is a pretrain checkpoint of {', '.join(have)}; distillation needs the six "
                              f"modalities (missing: {', '.join(missing)})")
    cfg = load_config(config_path, _overrides(overrides, device, compile_), base)
    plain = config_to_dict(cfg)
    plain["model"] = dict(tck["config"]["model"])  # the students' encoders follow the teacher's
    cfg = config_from_dict(plain)
    dataset = PretrainDataset(store, benchmark, "train", shear=cfg.data.shear, crop_ratio=cfg.data.crop_ratio,
                              seed=cfg.data.seed)
    run = prepare_run_dir(run_dir, resume)
    seed_everything(cfg.data.seed)
    model = DistillModel(tck["model"], tck["config"]["model"], **asdict(cfg.distill))
    click.echo(f"distilling {teacher} into {', '.join(cfg.distill.student_modalities)} on {benchmark} "
               f"({len(dataset)} train samples) for {cfg.optim.epochs} epochs into {run}")
    train(model, dataset, cfg, run, kind="distill", modalities=cfg.distill.student_modalities, resume=resume,
          extra={"teacher": str(teacher), "store": str(store), "benchmark": benchmark}, log=click.echo)
    click.echo(f"done: {run / 'last.pt'}")


@click.command()
@_common
@click.option("--checkpoint", required=True, type=click.Path(),
              help="Pretrain or distill checkpoint whose encoders are evaluated.")
@click.option("--modalities", default=None,
              help="Comma-separated modalities or 'all' (= every encoder of the checkpoint, logits averaged). "
                   "Default: all of the checkpoint's (a student's three streams fused).")
@_friendly
def linear(store, benchmark, config_path, overrides, run_dir, device, checkpoint, modalities):
    """Linear evaluation: frozen encoders, new linear classifiers, val top-1/top-5."""
    from ikem_train.config import load_config
    from ikem_train.linear import linear_evaluate
    from ikem_train.loop import prepare_run_dir

    if modalities is not None and modalities.strip() != "all":
        from ikem_data.names import resolve_modalities

        try:
            modalities = resolve_modalities(modalities)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--modalities") from None
    cfg = load_config(config_path, _overrides(overrides, device))
    run = prepare_run_dir(run_dir, False)
    res = linear_evaluate(checkpoint, store, benchmark, cfg, run, modalities=modalities, log=click.echo)
    final, best = res["final"], res["best_on_val"]
    what = " + ".join(res["modalities"]) + (" (logits averaged)" if res["fused"] else "")
    click.echo(f"linear evaluation of {what} on {benchmark} val ({res['val_samples']} samples):")
    click.echo(f"  final epoch {final['epoch']}: top-1 {100 * final['top1']:.2f} %, top-5 {100 * final['top5']:.2f} %")
    click.echo(f"  best epoch {best['epoch']} (selected on the validation split): top-1 {100 * best['top1']:.2f} %, "
               f"top-5 {100 * best['top5']:.2f} %")
    click.echo(f"results: {run / 'results.json'}, scores: {run / 'scores.npz'}")


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN_DIR[:WEIGHT]...")
@click.option("--softmax", is_flag=True, help="Fuse softmax probabilities instead of raw logits.")
@_friendly
def fuse(runs, softmax):
    """Late fusion of the saved val scores of separate linear-evaluation runs."""
    from ikem_train.fuse import format_table, fuse_runs, parse_run_spec

    result = fuse_runs([parse_run_spec(spec) for spec in runs], softmax=softmax)
    click.echo(format_table(result))
