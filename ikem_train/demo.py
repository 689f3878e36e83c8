"""The one-command demo: the whole IKEM method on the bundled MIT Kinect captures, with the
baselines that say whether pretraining taught the encoders anything.

gendata -> modalities -> for each seed: six-modality teacher pretraining, distillation
into three students, a supervised-from-scratch model; then linear and KNN evaluation of
every row below with the same settings (BatchNorm statistics recomputed on the train
split for every row, so no encoder's features collapse):

- random init: the same encoders, randomly initialised, never trained (6 and 3 streams);
- teacher / student: the self-supervised encoders (no labels seen before evaluation);
- supervised: the student's three streams trained from scratch on the labels, frozen and
  evaluated the same way (a reference ceiling, not self-supervised).

Each cell is the mean ± std over the seeds of top-1 on a class-balanced val split.
The data (one person, five gestures: 30-frame clips cut by :mod:`ikem_data.demo_clips`,
every third 45-frame block of a capture held out for val) is tiny and easy: the table
shows the pipeline working and how far a few dozen training steps move the encoders from
their random initialisation, nothing about the method's accuracy on NTU RGB+D.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ikem_data.demo_clips import DEMO_CLASSES, write_demo_clips
from ikem_data.names import MODALITIES, STUDENT_MODALITIES

DEMO_CONFIG = Path(str(resources.files("ikem_train") / "demo.yaml"))
BENCHMARK = "custom"
#: (row, label, what the row means), in print order.
ROWS = (
    ("random-6", "random init, 6 modalities", "the teacher's encoders, random weights, never trained"),
    ("teacher", "teacher, 6 modalities", "self-supervised IKEM pretraining (no labels)"),
    ("random-3", "random init, 3 streams", "the student's encoders, random weights, never trained"),
    ("student", "student, 3 streams", "distilled from the teacher (no labels)"),
    ("supervised", "supervised, 3 streams", "trained from scratch on the train labels (a ceiling)"),
)


class DemoError(ValueError):
    """The demo cannot start (an earlier demo in the folder); the message says what to do."""


def run_demo(out_dir, device="auto", overrides=(), seeds=3, echo=print) -> dict:
    """Run the demo into a new folder and print its table.

    Args:
        out_dir: folder for the store, the run folders and ``summary.json``; must not
            hold an earlier demo (nothing is ever overwritten).
        device: ``auto``, ``cpu`` or ``cuda``.
        overrides: extra ``section.key=value`` settings for every job.
        seeds: repetitions (seeds 0, 1, ...) behind each mean ± std.
        echo: where progress lines and the table go.

    Returns:
        the summary written to ``summary.json``: per row and column the per-seed values,
        their mean and std, per-stream and per-class accuracies, and the output paths.

    Raises:
        DemoError: ``out_dir`` holds an earlier demo; any job's error.
    """
    from ikem_data.modalities.stage import build_modalities
    from ikem_data.gendata.run import gendata

    out = Path(out_dir)
    if (out / "runs").exists():
        raise DemoError(f"{out} holds an earlier demo; remove it or pass --out elsewhere")
    started = time.perf_counter()
    labels = write_demo_clips(out / "input", window=30, stride=2, block=45)
    store = out / "demo.zarr"
    gendata(str(labels.parent / "clips"), str(store), input_format="kinect-csv", labels=str(labels), max_bodies=1,
            workers=1, progress=False, log=lambda *a: None)
    build_modalities(str(store), progress=False)
    echo(f"store {store}: the bundled captures cut into clips ({_split_sizes(store)})")

    values = {row: {"linear": [], "knn": []} for row, *_ in ROWS}
    details = {row: [] for row, *_ in ROWS}
    for seed in range(seeds):
        settings = [f"data.seed={seed}", f"run.device={device}", *overrides]
        for row, results in _one_seed(store, out / "runs" / f"seed{seed}", settings, seed, seeds, echo).items():
            values[row]["linear"].append(results["linear"]["final"]["top1"])
            values[row]["knn"].append(results["knn"]["top1"].get("fused", next(iter(results["knn"]["top1"].values()))))
            details[row].append(results)
    summary = {"store": str(store), "seeds": seeds,
               "rows": {row: {col: {"values": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
                              for col, v in values[row].items()} for row in values},
               "per_stream": {row: _mean_per_stream(details[row]) for row in values},
               "per_class": {row: _mean_per_class(details[row]) for row in values},
               "collapsed": sorted({f"{row} {m} (seed {seed})" for row in values
                                    for seed, r in enumerate(details[row])
                                    for m, h in r["linear"]["feature_health"].items() if h["collapsed"]}),
               "runs": str(out / "runs")}
    summary["pictures"] = _pictures(store, out, ["data.seed=0", f"run.device={device}", *overrides])
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(summary, echo)
    return summary


def _pictures(store, out, settings) -> dict:
    """Seed 0's pictures: a val clip, the teacher's curves, the student's linear confusion
    matrix and t-SNE maps of teacher and student features. {what: path}."""
    from ikem_data.show.sample import show
    from ikem_data.store import open_store
    from ikem_train.pictures.embed import embed
    from ikem_train.pictures.plots import plot_run

    runs, pictures = out / "runs" / "seed0", out / "pictures"
    with open_store(store) as s:
        first_val = int(s.split(BENCHMARK, "val")[0])
    made = {"a val clip, 3D skeleton": show(store, first_val, pictures / "val-clip.gif")["path"],
            "teacher training curves": plot_run(runs / "teacher")["curves"]["path"]}
    student = plot_run(runs / "linear-student")
    made["student linear evaluation curves"] = student["curves"]["path"]
    made["student confusion matrix"] = student["confusion"]["path"]
    for who in ("teacher", "student"):
        made[f"t-SNE of {who} features (val)"] = embed(
            store, BENCHMARK, pictures / f"tsne-{who}.png", checkpoint=runs / who / "last.pt", config=DEMO_CONFIG,
            overrides=settings, log=lambda *a: None)["path"]
    return {what: str(path) for what, path in made.items()}


def _split_sizes(store):
    from ikem_data.store import open_store

    with open_store(store) as s:
        return ", ".join(f"{part} {len(s.split(BENCHMARK, part))}" for part in ("train", "val"))


def _one_seed(store, runs, settings, seed, seeds, echo) -> dict:
    """Train the seed's models and evaluate every row: {row: {"linear": ..., "knn": ...}}."""
    from ikem_train import jobs

    def step(message, job, *args, **kwargs):
        t0 = time.perf_counter()
        result = job(store, BENCHMARK, *args, config=DEMO_CONFIG, overrides=settings, log=lambda *a: None, **kwargs)
        echo(f"  seed {seed + 1}/{seeds}: {message} ({time.perf_counter() - t0:.0f} s)")
        return result

    teacher = step("teacher pretraining, six modalities", jobs.pretrain, runs / "teacher")
    student = step("distillation into three students", jobs.distill, runs / "student", teacher=teacher["checkpoint"])
    supervised = step("supervised training from scratch, three streams", jobs.finetune, runs / "supervised",
                      from_scratch=True, modalities=list(STUDENT_MODALITIES))["run"]
    sources = {"random-6": {"random_init": True, "modalities": list(MODALITIES)},
               "teacher": {"checkpoint": teacher["checkpoint"]},
               "random-3": {"random_init": True, "modalities": list(STUDENT_MODALITIES)},
               "student": {"checkpoint": student["checkpoint"]},
               "supervised": {"checkpoint": str(Path(supervised) / "last.pt")}}
    return {row: step(f"linear and KNN evaluation of {row}", jobs.frozen_evaluation,
                      {protocol: runs / f"{protocol}-{row}" for protocol in jobs.PROTOCOLS}, **source)
            for row, source in sources.items()}


def _mean_per_stream(results) -> dict:
    streams = results[0]["linear"]["per_modality_top1"]
    return {m: {"linear": float(np.mean([r["linear"]["per_modality_top1"][m] for r in results])),
                "knn": float(np.mean([r["knn"]["top1"][m] for r in results]))} for m in streams}


def _mean_per_class(results) -> dict:
    names = {label: name for label, (_, name) in enumerate(DEMO_CLASSES)}
    rows = [{c["label"]: c["top1"] for c in r["linear"]["per_class"]} for r in results]
    return {names[label]: float(np.mean([row[label] for row in rows])) for label in rows[0]}


def _cell(col):
    return f"{100 * col['mean']:5.1f} ± {100 * col['std']:4.1f}"


def _print_table(summary, echo):
    seeds = summary["seeds"]
    rows = summary["rows"]
    echo("")
    echo(f"ikem demo finished in {summary['seconds']:.0f} s. A SMOKE RUN on a tiny data set (one person, "
         f"{len(DEMO_CLASSES)} gestures), not a benchmark.")
    echo(f"val top-1 in %, class-balanced val split, mean ± std over {seeds} seed(s); frozen encoders, "
         "BN statistics recomputed on the train split for every row")
    echo(f"{'':<28}{'linear':>14}{'KNN (k=1)':>14}   what the row is")
    for row, label, meaning in ROWS:
        echo(f"{label:<28}{_cell(rows[row]['linear']):>14}{_cell(rows[row]['knn']):>14}   {meaning}")
    chance = 100 / len(DEMO_CLASSES)
    echo(f"chance: {chance:.1f} %; always answering the most frequent train class: {chance:.1f} % "
         "(the val split is class-balanced)")
    for row in ("teacher", "student"):
        streams = summary["per_stream"][row]
        echo(f"{row} per stream alone (linear / KNN): " +
             ", ".join(f"{m} {100 * v['linear']:.0f}/{100 * v['knn']:.0f}" for m, v in streams.items()))
    echo("student per class (linear): " +
         ", ".join(f"{name} {100 * acc:.0f}" for name, acc in summary["per_class"]["student"].items()))
    echo("collapsed frozen features: " + (", ".join(summary["collapsed"]) or "none"))
    verdict = [row for row, baseline in (("teacher", "random-6"), ("student", "random-3"))
               if all(rows[row][col]["mean"] - rows[baseline][col]["mean"] >
                      max(rows[row][col]["std"], rows[baseline][col]["std"]) for col in ("linear", "knn"))]
    learned = " and ".join(verdict) if verdict else "neither teacher nor student"
    echo(f"pretraining beats random initialisation by more than the std in both columns: {learned}")
    echo("pictures (seed 1):")
    for what, path in summary["pictures"].items():
        echo(f"  {what + ':':<36}{path}")
    echo(f"outputs: {summary['runs']} (one folder per seed and job), summary.json beside it")
