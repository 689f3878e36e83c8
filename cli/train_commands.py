"""`ikem-train pretrain | distill | linear | knn | finetune | fuse`: wiring over ikem_train.jobs.

Each command turns its options into a config path plus ``section.key=value`` overrides,
calls one job and prints its result. Heavy imports (torch, zarr, ikem_train) stay inside
the command bodies so that `ikem-train --help` is fast. Errors written for users become
one line and a non-zero exit.

Under torchrun (``torchrun ... -m ikem_train <command> ...``) every process runs the
command; rank 0 prints the results, and a rank >= 1 prints only its own error, prefixed
with its rank (an error that merely echoes another rank's failure is left to rank 0).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

_HELP_SET = "Override a config value, e.g. --set optim.lr=0.05 (value parsed as YAML; repeatable)."

# Error types whose message is written for users; anything else keeps its traceback (a bug).
_FRIENDLY = {"ConfigError", "TrainingError", "CheckpointError", "EvaluationError", "StoreError", "FuseError",
             "DemoError", "EmbedError", "LockedError", "ValueError", "DistributedError", "PeerFailure",
             "OutputError"}


def _rank() -> int:
    """This process's rank under torchrun (0 without it); the environment alone, no torch import."""
    return int(os.environ.get("RANK", "0"))


def _common(func):
    """Options every training and evaluation command shares."""
    options = [
        click.option("--store", required=True, type=click.Path(), help="ikem store (zarr folder or .h5 file)."),
        click.option("--benchmark", required=True, help="Benchmark split in the store, e.g. ntu60-xsub."),
        click.option("--config", "config_path", type=click.Path(), default=None,
                     help="YAML run config (see configs/); defaults are the paper settings."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_HELP_SET),
        click.option("--run-dir", "--run", "run_dir", required=True, type=click.Path(),
                     help="Run folder for config, metrics, checkpoints and results (created; a non-empty one is "
                          "refused, except by a training command's --resume)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
                     help="Device (default: the config's run.device, normally auto)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _modalities_option(help_text):
    return click.option("--modalities", default=None, help=help_text)


def friendly_errors(func):
    """Turn the library's known errors into ClickException (one line, non-zero exit), and
    Ctrl-C into a line that says how to go on (exit 130)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            if _rank() == 0:  # every process gets the Ctrl-C: one of them says how to go on
                click.echo(f"\ninterrupted: {_interrupted_hint(kwargs)}", err=True)
            raise SystemExit(130) from None
        except click.ClickException:
            raise
        except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
            if type(exc).__name__ not in _FRIENDLY and not isinstance(exc, (KeyError, FileNotFoundError)):
                raise
            if isinstance(exc, KeyError) and not _written_for_users(exc):
                raise  # a bare KeyError('rng') is a lookup ikem failed to check: its traceback says where
            message = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).replace("\n", " ")
            rank = _rank()
            if rank:
                message = f"rank {rank}: {message}"
            if "TORCHELASTIC_ERROR_FILE" in os.environ:  # under torchrun: its failure summary shows the line
                from ikem_train.training.distributed import record_error_for_torchrun

                record_error_for_torchrun(message)
            if rank and type(exc).__name__ == "PeerFailure":  # rank 0 reports the failure it echoes
                raise SystemExit(1) from None
            raise click.ClickException(message) from None
        except OSError as exc:  # a full disk or the file-size limit: one line saying what is kept
            from ikem_data.files import NoRoomError, is_no_room, no_room

            if isinstance(exc, NoRoomError):
                raise click.ClickException(str(exc)) from None
            if not is_no_room(exc):
                raise
            where = exc.filename or kwargs.get("run_dir") or "the run folder"
            raise click.ClickException(str(no_room(exc, where, "file", "the last checkpoint is kept",
                                                   rerun="rerun the same command with --resume"))) from None

    return wrapper


def _written_for_users(exc: KeyError) -> bool:
    """True for a KeyError whose text is a sentence (e.g. a store's "no benchmark ..., it has ..."),
    False for a bare key, which printed as "Error: rng" tells a user nothing."""
    return bool(exc.args) and isinstance(exc.args[0], str) and " " in exc.args[0].strip()


def _interrupted_hint(kwargs) -> str:
    """What a Ctrl-C leaves, by what is in the run folder now (a checkpoint is promised only when
    there is one: in epoch 1 there is none yet)."""
    if kwargs.get("run_dir") is None:
        return "nothing was written"
    run = Path(kwargs["run_dir"])
    if "resume" not in kwargs:
        return "nothing was finished; rerun it with a new --run-dir"
    if (run / "last.pt").is_file():
        return "the last finished epoch's checkpoint is kept; rerun the same command with --resume to continue"
    if (run / "config.yaml").is_file():
        return ("no epoch had finished, so there is no checkpoint yet; rerun the same command with --resume to start "
                "it again from epoch 1")
    return "nothing was written yet; rerun the same command"


def _overrides(overrides, device=None, **settings):
    """``--set`` items plus option values as overrides (``None`` options are left out)."""
    out = list(overrides)
    if device is not None:
        out.append(f"run.device={device}")
    for key, value in settings.items():
        if value is not None:
            out.append(f"{key}={value}")
    return out


def _modality_list(modalities):
    """``--modalities`` checked here, so a typo is a usage error naming the option."""
    if modalities is None or modalities.strip() == "all":
        return modalities
    if "multimodal" in [part.strip() for part in modalities.split(",")]:  # UmURL features: the job checks them
        return modalities
    from ikem_data.names import resolve_modalities

    try:
        return list(resolve_modalities(modalities))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--modalities") from None


def _flag(value):
    return "true" if value else None


@click.command()
@_common
@_modalities_option("Comma-separated modalities, or 'all' for the six (alias omega = angular_velocity). "
                    "Default: the config's model.modalities.")
@click.option("--method", default=None,
              help="ikem (default: SkeletonCLR, CrosSCLR, IKEM) or umurl (UmURL; use configs/<benchmark>/umurl.yaml "
                   "for its paper settings). Sets model.method.")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last.pt, exactly.")
@click.option("--compile", "compile_", is_flag=True, help="Run the model through torch.compile.")
@friendly_errors
def pretrain(store, benchmark, config_path, overrides, run_dir, device, modalities, method, resume, compile_):
    """Self-supervised pretraining: SkeletonCLR (one modality), CrosSCLR or IKEM (several), or UmURL."""
    from ikem_train import jobs

    names = _modality_list(modalities)
    settings = {"model.modalities": f"[{','.join(names)}]" if isinstance(names, list) else names,
                "model.method": method, "run.compile": _flag(compile_)}
    res = jobs.pretrain(store, benchmark, run_dir, config=config_path, overrides=_overrides(overrides, device, **settings),
                        resume=resume, log=click.echo)
    if _rank() == 0:
        click.echo(f"done: {res['checkpoint']}")


@click.command()
@_common
@click.option("--teacher", type=click.Path(), default=None,
              help="Six-modality pretrain checkpoint (e.g. runs/teacher/last.pt); with --resume, defaults to the one recorded.")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last.pt, exactly.")
@click.option("--compile", "compile_", is_flag=True, help="Run the model through torch.compile.")
@friendly_errors
def distill(store, benchmark, config_path, overrides, run_dir, device, teacher, resume, compile_):
    """Relational distillation of a six-modality teacher into joint/motion/bone students."""
    from ikem_train import jobs

    res = jobs.distill(store, benchmark, run_dir, teacher=teacher, config=config_path, resume=resume,
                       overrides=_overrides(overrides, device, **{"run.compile": _flag(compile_)}), log=click.echo)
    if _rank() == 0:
        click.echo(f"done: {res['checkpoint']}")


def _frozen_options(func):
    """Options of the frozen-feature evaluations (linear, knn)."""
    options = [
        click.option("--checkpoint", type=click.Path(), default=None,
                     help="Pretrain, distill or finetune checkpoint whose encoders are evaluated."),
        click.option("--random-init", is_flag=True,
                     help="Evaluate freshly initialised encoders instead (the no-pretraining baseline; seed "
                          "data.seed, widths and modalities from the config)."),
        _modalities_option("Comma-separated modalities or 'all' (= every encoder of the checkpoint, fused). "
                           "Default: all of the checkpoint's. A UmURL checkpoint: multimodal (its fused feature, "
                           "the default), joint, bone, motion, or all."),
        click.option("--bn-recalibrate", is_flag=True,
                     help="Recompute the encoders' BatchNorm running statistics over the train split before "
                          "freezing them (off in the reference; recorded in results.json)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _print_health(res):
    collapsed = [m for m, h in res["feature_health"].items() if h["collapsed"]]
    spreads = ", ".join(f"{m} {h['std']:.3g} ({h['relative']:.3g})" for m, h in res["feature_health"].items())
    click.echo(f"  feature spread, std across samples (std / mean |f|): {spreads}" +
               (f"  COLLAPSED: {', '.join(collapsed)}" if collapsed else ""))
    click.echo(f"  baselines: chance {100 * res['chance']:.2f} %, always the most frequent train class "
               f"{100 * res['majority_baseline']:.2f} %; balanced top-1 {100 * res['balanced_top1']:.2f} %")
    if res["unseen_val_classes"]:
        click.echo(f"  val classes never seen in training: {res['unseen_val_classes']}")


@click.command()
@_common
@_frozen_options
@friendly_errors
def linear(store, benchmark, config_path, overrides, run_dir, device, checkpoint, random_init, modalities,
           bn_recalibrate):
    """Linear evaluation: frozen encoders, new linear classifiers, val top-1/top-5."""
    from ikem_train import jobs

    res = jobs.linear(store, benchmark, run_dir, checkpoint=checkpoint, random_init=random_init,
                      modalities=_modality_list(modalities), config=config_path, log=click.echo,
                      overrides=_overrides(overrides, device, **{"evaluation.bn_recalibrate": _flag(bn_recalibrate)}))
    if res is None:  # a rank >= 1 under torchrun: rank 0 evaluates alone
        return
    final, best = res["final"], res["best_on_val"]
    what = " + ".join(res["modalities"]) + (" (logits averaged)" if res["fused"] else "")
    click.echo(f"linear evaluation of {what} on {benchmark} val ({res['val_samples']} samples):")
    click.echo(f"  final epoch {final['epoch']}: top-1 {100 * final['top1']:.2f} %, top-5 {100 * final['top5']:.2f} %")
    if res["fused"]:
        click.echo("  each modality alone (its own classifier): " +
                   ", ".join(f"{m} {100 * v:.2f} %" for m, v in res["per_modality_top1"].items()))
    click.echo(f"  best epoch {best['epoch']} (selected on the validation split): top-1 {100 * best['top1']:.2f} %, "
               f"top-5 {100 * best['top5']:.2f} %")
    _print_health(res)
    click.echo(f"results: {res['run']}/results.json, scores: {res['run']}/scores.npz")


@click.command()
@_common
@_frozen_options
@click.option("--k", type=click.IntRange(min=1), default=None,
              help="Neighbours of the cosine k-NN (default: evaluation.knn_k = 1, UmURL's protocol).")
@friendly_errors
def knn(store, benchmark, config_path, overrides, run_dir, device, checkpoint, random_init, modalities,
        bn_recalibrate, k):
    """KNN retrieval: each val sample takes the label of its most similar train sample (cosine)."""
    from ikem_train import jobs

    settings = {"evaluation.bn_recalibrate": _flag(bn_recalibrate), "evaluation.knn_k": k}
    res = jobs.knn(store, benchmark, run_dir, checkpoint=checkpoint, random_init=random_init,
                   modalities=_modality_list(modalities), config=config_path, log=click.echo,
                   overrides=_overrides(overrides, device, **settings))
    if res is None:  # a rank >= 1 under torchrun: rank 0 evaluates alone
        return
    click.echo(f"KNN (k={res['k']}, cosine) on {benchmark} val ({res['val_samples']} samples): " +
               ", ".join(f"{m} {100 * v:.2f} %" for m, v in res["top1"].items()))
    _print_health(res)
    click.echo(f"results: {res['run']}/results.json")


@click.command()
@_common
@click.option("--checkpoint", type=click.Path(), default=None,
              help="Pretrain, distill or finetune checkpoint whose encoders start the fine-tuning.")
@click.option("--from-scratch", is_flag=True,
              help="Train randomly initialised encoders instead (the supervised baseline).")
@_modalities_option("Comma-separated modalities or 'all' (default: all of the checkpoint's, or the config's "
                    "model.modalities with --from-scratch); several are fused by averaging logits.")
@click.option("--label-fraction", type=float, default=None,
              help="Semi-supervised: train on this fraction of each class's train samples, e.g. 0.01 or 0.1 "
                   "(seeded by data.seed; the drawn indices are saved in the run). Default: all labels.")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last.pt, exactly.")
@friendly_errors
def finetune(store, benchmark, config_path, overrides, run_dir, device, checkpoint, from_scratch, modalities,
             label_fraction, resume):
    """Fine-tuning: encoders and new classifiers trained end to end on labels."""
    from ikem_train import jobs

    res = jobs.finetune(store, benchmark, run_dir, checkpoint=checkpoint, from_scratch=from_scratch,
                        modalities=_modality_list(modalities), config=config_path, resume=resume, log=click.echo,
                        overrides=_overrides(overrides, device, **{"finetune.label_fraction": label_fraction}))
    if res is None:  # a rank >= 1 under torchrun: rank 0 evaluated and wrote the results
        return
    final, best = res["final"], res["best_on_val"]
    click.echo(f"fine-tuning of {' + '.join(res['modalities'])} on {benchmark} val ({res['val_samples']} samples), "
               f"{res['train_samples']} labelled train samples:")
    click.echo(f"  final epoch {final['epoch']}: top-1 {100 * final['top1']:.2f} %, top-5 {100 * final['top5']:.2f} %")
    click.echo(f"  best epoch {best['epoch']} (selected on the validation split): top-1 {100 * best['top1']:.2f} %")
    click.echo(f"results: {res['run']}/results.json")


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN_DIR[:WEIGHT]...")
@click.option("--softmax", is_flag=True, help="Fuse softmax probabilities instead of raw logits.")
@friendly_errors
def fuse(runs, softmax):
    """Late fusion of the saved val scores of separate linear-evaluation runs."""
    from ikem_train.eval.fuse import format_table, fuse_runs, parse_run_spec

    result = fuse_runs([parse_run_spec(spec) for spec in runs], softmax=softmax)
    click.echo(format_table(result))
