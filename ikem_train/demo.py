"""The one-command demo: the whole IKEM method on the bundled MIT Kinect captures.

gendata -> modalities -> six-modality teacher pretraining -> distillation into three
students -> linear evaluation of teacher and student, each step through the same
``ikem-data`` / ``ikem-train`` commands a user runs on NTU RGB+D. The data (one person,
five gestures, clips cut by :mod:`ikem_data.demo_clips`) is tiny, so the accuracies
prove that the pipeline runs end to end, nothing about the method.
"""

import json
import time
from importlib import resources
from pathlib import Path

import click

from ikem_data.demo_clips import DEMO_CLASSES, write_demo_clips

DEMO_CONFIG = Path(str(resources.files("ikem_train") / "demo.yaml"))


def _invoke(group, args, echo):
    echo(click.style("$ " + group.name + " " + " ".join(args), fg="cyan"))
    group.main(args, prog_name=group.name, standalone_mode=False)


def run_demo(out_dir, device="auto", overrides=(), echo=click.echo):
    """Run the demo into a new folder.

    Args:
        out_dir: folder for the store, the run folders and ``summary.json``; must not
            hold an earlier demo (nothing is ever overwritten).
        device: ``auto``, ``cpu`` or ``cuda``.
        overrides: extra ``--set key=value`` settings for every training command.
        echo: where progress lines go.

    Returns:
        dict with the teacher's and the student's linear-evaluation results
        (``results.json`` of each run) and the output paths.

    Raises:
        click.ClickException: ``out_dir`` holds an earlier demo; any step's error.
    """
    from ikem_cli.data import main as ikem_data
    from ikem_cli.train import main as ikem_train

    out = Path(out_dir)
    if (out / "runs").exists():
        raise click.ClickException(f"{out} holds an earlier demo; remove it or pass --out elsewhere")
    started = time.perf_counter()
    labels = write_demo_clips(out / "input", stride=4)
    store = str(out / "demo.zarr")
    train_args = ["--store", store, "--benchmark", "custom", "--config", str(DEMO_CONFIG), "--device", device]
    for item in overrides:
        train_args += ["--set", item]
    runs = {name: str(out / "runs" / name) for name in ("teacher", "student", "linear-teacher", "linear-student")}

    _invoke(ikem_data, ["gendata", "--raw", str(labels.parent / "clips"), "--input-format", "kinect-csv",
                        "--labels", str(labels), "--max-bodies", "1", "--out", store], echo)
    _invoke(ikem_data, ["modalities", "--out", store], echo)
    _invoke(ikem_train, ["pretrain", *train_args, "--run", runs["teacher"]], echo)
    _invoke(ikem_train, ["distill", *train_args, "--teacher", runs["teacher"] + "/last.pt", "--run", runs["student"]],
            echo)
    for who in ("teacher", "student"):
        _invoke(ikem_train, ["linear", *train_args, "--checkpoint", runs[who] + "/last.pt",
                             "--run", runs["linear-" + who]], echo)

    results = {who: json.loads((Path(runs["linear-" + who]) / "results.json").read_text())
               for who in ("teacher", "student")}
    summary = {"seconds": round(time.perf_counter() - started, 1), "store": store, "runs": runs, "results": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(summary, echo)
    return summary


def _print_table(summary, echo):
    classes = ", ".join(name for _, name in DEMO_CLASSES)
    echo("")
    echo(f"ikem demo finished in {summary['seconds']:.0f} s. This is a SMOKE RUN on a tiny data set "
         "(one person, 5 gestures), not a benchmark.")
    echo(f"classes: {classes}")
    echo(f"{'linear evaluation, final epoch':<34}{'val top-1':>10}")
    for who, label in (("teacher", "teacher, 6 modalities fused"), ("student", "student, 3 streams fused")):
        final = summary["results"][who]["final"]
        echo(f"{label:<34}{100 * final['top1']:>9.1f}%")
    echo(f"chance level: {100 / len(DEMO_CLASSES):.1f}% top-1")
    echo(f"store: {summary['store']}")
    for name, path in summary["runs"].items():
        echo(f"{name + ':':<16}{path}")
