"""The demo protocol: the whole IKEM method with the baselines that say whether pretraining
taught the encoders anything, on the bundled MIT Kinect captures or on any store.

(bundled: gendata -> modalities ->) for each seed: six-modality teacher pretraining,
distillation into three students, SkeletonCLR on the joint stream, a supervised-from-
scratch model; then linear and KNN evaluation of every row below with the same settings
(BatchNorm statistics recomputed on the train split for every row, so no encoder's
features collapse):

- random init: the same encoders, randomly initialised, never trained (6, 3 and 1 streams);
- teacher / student / SkeletonCLR: the self-supervised encoders (no labels seen before
  evaluation);
- supervised: the student's three streams trained from scratch on the labels, frozen and
  evaluated the same way (a reference ceiling, not self-supervised).

Each cell is the mean ± std over the seeds of top-1 on the val split. The bundled data
(one person, five gestures: 30-frame clips cut by :mod:`ikem_data.demo_clips`, every third
45-frame block of a capture held out for val, class-balanced) is tiny and easy: its table
shows the pipeline working and how far a few dozen training steps move the encoders from
their random initialisation, nothing about the method's accuracy on NTU RGB+D. On a store
of one's own (``--store``, ``--benchmark``) the same rows run with ``--config`` (default
:data:`SMALL_DATA_CONFIG`, the settings README's study found for ~1,000-sample datasets).
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
#: The default config of the demo protocol on a store of one's own (``--store``).
SMALL_DATA_CONFIG = Path(str(resources.files("ikem_train") / "small_data.yaml"))
BENCHMARK = "custom"
#: (row, label, what the row means), in print order.
ROWS = (
    ("random-6", "random init, 6 modalities", "the teacher's encoders, random weights, never trained"),
    ("teacher", "teacher, 6 modalities", "self-supervised IKEM pretraining (no labels)"),
    ("random-3", "random init, 3 streams", "the student's encoders, random weights, never trained"),
    ("student", "student, 3 streams", "distilled from the teacher (no labels)"),
    ("random-1", "random init, joint", "one joint encoder, random weights, never trained"),
    ("skeletonclr", "SkeletonCLR, joint", "self-supervised MoCo on the joint stream alone (no labels)"),
    ("supervised", "supervised, 3 streams", "trained from scratch on the train labels (a ceiling)"),
)
#: (pretrained row, its random-init baseline).
PAIRS = (("teacher", "random-6"), ("student", "random-3"), ("skeletonclr", "random-1"))


class DemoError(ValueError):
    """The demo cannot start (an earlier demo in the folder); the message says what to do."""


def run_demo(out_dir, device="auto", overrides=(), seeds=3, echo=print, *, store=None, benchmark=None,
             config=None) -> dict:
    """Run the demo protocol into a new folder and print its table.

    Args:
        out_dir: folder for the (bundled) store, the run folders and ``summary.json``; must
            not hold an earlier demo (nothing is ever overwritten).
        store, benchmark: a store with modalities and one of its benchmarks; None: the
            bundled captures (benchmark ``custom``).
        config: the run config of every job; None: :data:`DEMO_CONFIG` (bundled) or
            :data:`SMALL_DATA_CONFIG` (a store).
        device: ``auto``, ``cpu`` or ``cuda``.
        overrides: extra ``section.key=value`` settings for every job.
        seeds: repetitions (seeds 0, 1, ...) behind each mean ± std.
        echo: where progress lines and the table go.

    Returns:
        the summary written to ``summary.json``: per row and column the per-seed values,
        their mean and std, per-stream and per-class accuracies, and the output paths.

    Raises:
        DemoError: ``out_dir`` holds an earlier demo, a benchmark without a store, a store
            without modalities or without the benchmark; any job's error.
    """
    out = Path(out_dir)
    if (out / "runs").exists():
        raise DemoError(f"{out} holds an earlier demo; remove it or pass --out elsewhere")
    started = time.perf_counter()
    bundled = store is None
    if bundled:
        if benchmark not in (None, BENCHMARK):
            raise DemoError("--benchmark needs --store (the bundled captures have the benchmark custom only)")
        store, benchmark = _bundled_store(out), BENCHMARK
        echo(f"store {store}: the bundled captures cut into clips ({_split_sizes(store, benchmark)})")
    else:
        _check_store(store, benchmark)
        echo(f"store {store}, benchmark {benchmark} ({_split_sizes(store, benchmark)})")
    config = Path(config) if config is not None else DEMO_CONFIG if bundled else SMALL_DATA_CONFIG

    values = {row: {"linear": [], "knn": []} for row, *_ in ROWS}
    details = {row: [] for row, *_ in ROWS}
    end_to_end = []
    for seed in range(seeds):
        settings = [f"data.seed={seed}", f"run.device={device}", *overrides]
        runs = out / "runs" / f"seed{seed}"
        rows, supervised_top1 = _one_seed(store, benchmark, config, runs, settings, seed, seeds, echo)
        end_to_end.append(supervised_top1)
        for row, results in rows.items():
            values[row]["linear"].append(results["linear"]["final"]["top1"])
            values[row]["knn"].append(results["knn"]["top1"].get("fused", next(iter(results["knn"]["top1"].values()))))
            details[row].append(results)
    summary = {"store": str(store), "benchmark": benchmark, "config": str(config), "bundled": bundled,
               "seeds": seeds, "baselines": _baselines(store, benchmark),
               "rows": {row: {col: {"values": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
                              for col, v in values[row].items()} for row in values},
               "supervised_end_to_end": {"values": end_to_end, "mean": float(np.mean(end_to_end)),
                                         "std": float(np.std(end_to_end))},
               "per_stream": {row: _mean_per_stream(details[row]) for row in values},
               "per_class": {row: _mean_per_class(details[row], store) for row in values},
               "collapsed": sorted({f"{row} {m} (seed {seed})" for row in values
                                    for seed, r in enumerate(details[row])
                                    for m, h in r["linear"]["feature_health"].items() if h["collapsed"]}),
               "runs": str(out / "runs")}
    summary["margins"] = {row: {col: _margin(summary["rows"][row][col], summary["rows"][base][col])
                                for col in ("linear", "knn")} for row, base in PAIRS}
    summary["pictures"] = _pictures(store, benchmark, config, out, ["data.seed=0", f"run.device={device}", *overrides])
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(summary, echo)
    return summary


def _bundled_store(out) -> Path:
    """The bundled captures cut into clips, as the store ``out/demo.zarr``."""
    from ikem_data.gendata.run import gendata
    from ikem_data.modalities.stage import build_modalities

    labels = write_demo_clips(out / "input", window=30, stride=2, block=45)
    store = out / "demo.zarr"
    gendata(str(labels.parent / "clips"), str(store), input_format="kinect-csv", labels=str(labels), max_bodies=1,
            workers=1, progress=False, log=lambda *a: None)
    build_modalities(str(store), progress=False)
    return store


def _check_store(store, benchmark):
    from ikem_data.store import open_store

    try:
        with open_store(store, "r") as s:
            complete = bool((s.stage("modalities") or {}).get("complete"))
            benchmarks = s.benchmarks()
    except (ValueError, OSError) as exc:
        raise DemoError(f"--store {store}: {exc}") from None
    if not complete:
        raise DemoError(f"--store {store} has no complete modalities: run `ikem-data modalities --out {store}` first")
    if benchmark not in benchmarks:
        raise DemoError(f"--benchmark {benchmark!r} is not in {store}; it holds: {', '.join(benchmarks) or 'none'}")


def _margin(pretrained, baseline) -> float:
    """How far the pretrained row's mean lies above the baseline's, in units of the larger std
    (inf when both stds are 0 and the means differ)."""
    gap = pretrained["mean"] - baseline["mean"]
    spread = max(pretrained["std"], baseline["std"])
    return float(gap / spread) if spread > 0 else float("inf") if gap > 0 else float("-inf") if gap < 0 else 0.0


def _pictures(store, benchmark, config, out, settings) -> dict:
    """Seed 0's pictures: a val clip, the teacher's curves, the student's linear confusion
    matrix and t-SNE maps of teacher and student features. {what: path}."""
    from ikem_data.show.sample import show
    from ikem_data.store import open_store
    from ikem_train.pictures.embed import embed
    from ikem_train.pictures.plots import plot_run

    runs, pictures = out / "runs" / "seed0", out / "pictures"
    with open_store(store) as s:
        first_val = int(s.split(benchmark, "val")[0])
    made = {"a val clip, 3D skeleton": show(store, first_val, pictures / "val-clip.gif")["path"],
            "teacher training curves": plot_run(runs / "teacher")["curves"]["path"]}
    student = plot_run(runs / "linear-student")
    made["student linear evaluation curves"] = student["curves"]["path"]
    made["student confusion matrix"] = student["confusion"]["path"]
    for who in ("teacher", "student"):
        made[f"t-SNE of {who} features (val)"] = embed(
            store, benchmark, pictures / f"tsne-{who}.png", checkpoint=runs / who / "last.pt", config=config,
            overrides=settings, log=lambda *a: None)["path"]
    return {what: str(path) for what, path in made.items()}


def _split_sizes(store, benchmark):
    from ikem_data.store import open_store

    with open_store(store) as s:
        return ", ".join(f"{part} {len(s.split(benchmark, part))}" for part in ("train", "val"))


def _baselines(store, benchmark) -> dict:
    """Chance (1 / classes) and always answering the most frequent train class, on val."""
    from ikem_data.store import open_store

    with open_store(store) as s:
        labels = np.asarray(s["raw/label"][...])
        train, val = labels[s.split(benchmark, "train")], labels[s.split(benchmark, "val")]
    counts = np.bincount(train, minlength=int(labels.max()) + 1)
    return {"chance": 1.0 / int(np.count_nonzero(np.bincount(labels))),
            "most_frequent": float(np.mean(val == int(np.argmax(counts)))),
            "classes": int(np.count_nonzero(np.bincount(labels))), "val_balanced": bool(len(set(
                np.bincount(val)[np.bincount(val) > 0].tolist())) == 1)}


def _one_seed(store, benchmark, config, runs, settings, seed, seeds, echo) -> dict:
    """Train the seed's models and evaluate every row: ``({row: {"linear": ..., "knn": ...}}, val top-1
    of the supervised model's own end-to-end classifier)``."""
    from ikem_train import jobs

    def step(message, job, *args, overrides=(), **kwargs):
        t0 = time.perf_counter()
        result = job(store, benchmark, *args, config=config, overrides=[*settings, *overrides], log=lambda *a: None,
                     **kwargs)
        echo(f"  seed {seed} ({seed + 1} of {seeds}, runs/seed{seed}): {message} ({time.perf_counter() - t0:.0f} s)")
        return result

    teacher = step("teacher pretraining, six modalities", jobs.pretrain, runs / "teacher")
    student = step("distillation into three students", jobs.distill, runs / "student", teacher=teacher["checkpoint"])
    # SkeletonCLR: the same settings on one modality (no cross phase: that needs two)
    single = step("SkeletonCLR pretraining, joint", jobs.pretrain, runs / "skeletonclr",
                  overrides=["model.modalities=[joint]"])
    supervised = step("supervised training from scratch, three streams", jobs.finetune, runs / "supervised",
                      from_scratch=True, modalities=list(STUDENT_MODALITIES))
    sources = {"random-6": {"random_init": True, "modalities": list(MODALITIES)},
               "teacher": {"checkpoint": teacher["checkpoint"]},
               "random-3": {"random_init": True, "modalities": list(STUDENT_MODALITIES)},
               "student": {"checkpoint": student["checkpoint"]},
               "random-1": {"random_init": True, "modalities": ["joint"]},
               "skeletonclr": {"checkpoint": single["checkpoint"]},
               "supervised": {"checkpoint": str(Path(supervised["run"]) / "last.pt")}}
    rows = {row: step(f"linear and KNN evaluation of {row}", jobs.frozen_evaluation,
                      {protocol: runs / f"{protocol}-{row}" for protocol in jobs.PROTOCOLS}, **source)
            for row, source in sources.items()}
    return rows, supervised["final"]["top1"]


def _mean_per_stream(results) -> dict:
    streams = results[0]["linear"]["per_modality_top1"]
    return {m: {"linear": float(np.mean([r["linear"]["per_modality_top1"][m] for r in results])),
                "knn": float(np.mean([r["knn"]["top1"][m] for r in results]))} for m in streams}


def _mean_per_class(results, store) -> dict:
    from ikem_data.class_names import label_name, store_class_names
    from ikem_data.store import open_store

    with open_store(store) as s:
        names = store_class_names(s)
    rows = [{c["label"]: c["top1"] for c in r["linear"]["per_class"]} for r in results]
    return {label_name(names, label): float(np.mean([row[label] for row in rows])) for label in rows[0]}


def _cell(col):
    return f"{100 * col['mean']:5.1f} ± {100 * col['std']:4.1f}"


def _print_table(summary, echo):
    seeds = summary["seeds"]
    rows = summary["rows"]
    base = summary["baselines"]
    echo("")
    if summary["bundled"]:
        echo(f"ikem demo finished in {summary['seconds']:.0f} s. A SMOKE RUN on a tiny data set (one person, "
             f"{len(DEMO_CLASSES)} gestures), not a benchmark.")
    else:
        echo(f"ikem demo protocol on {summary['store']} ({summary['benchmark']}) finished in "
             f"{summary['seconds']:.0f} s; config {summary['config']}")
    balanced = "class-balanced val split" if base["val_balanced"] else "val split"
    echo(f"val top-1 in %, {balanced}, final epoch, mean ± std over {seeds} seed(s); frozen encoders, "
         "BN statistics recomputed on the train split for every row")
    echo(f"{'':<28}{'linear':>14}{'KNN (k=1)':>14}   what the row is")
    for row, label, meaning in ROWS:
        echo(f"{label:<28}{_cell(rows[row]['linear']):>14}{_cell(rows[row]['knn']):>14}   {meaning}")
    echo(f"chance: {100 * base['chance']:.1f} %; always answering the most frequent train class: "
         f"{100 * base['most_frequent']:.1f} %" + (" (the val split is class-balanced)" if base["val_balanced"] else ""))
    echo(f"supervised model's own classifier (end to end, not frozen): val top-1 "
         f"{_cell(summary['supervised_end_to_end']).strip()} %")
    for row in ("teacher", "student"):
        streams = summary["per_stream"][row]
        echo(f"{row} per stream alone (linear / KNN): " +
             ", ".join(f"{m} {100 * v['linear']:.0f}/{100 * v['knn']:.0f}" for m, v in streams.items()))
    echo("student per class (linear): " +
         ", ".join(f"{name} {100 * acc:.0f}" for name, acc in summary["per_class"]["student"].items()))
    echo("collapsed frozen features: " + (", ".join(summary["collapsed"]) or "none"))
    echo("pretrained minus random init, in units of the larger std (linear / KNN): " + ", ".join(
        f"{row} {summary['margins'][row]['linear']:+.1f} / {summary['margins'][row]['knn']:+.1f}" for row, _ in PAIRS))
    verdict = [row for row, _ in PAIRS if all(summary["margins"][row][col] > 2 for col in ("linear", "knn"))]
    learned = ", ".join(verdict) if verdict else "none of the pretrained rows"
    echo(f"pretraining beats random initialisation by more than 2 std in both columns: {learned}"
         + (" (one seed: no std, so no such claim)" if seeds < 2 else ""))
    echo("pictures (seed 0, runs/seed0):")
    for what, path in summary["pictures"].items():
        echo(f"  {what + ':':<36}{path}")
    echo(f"outputs: {summary['runs']} (one folder per seed and job), summary.json beside it")
