"""Pictures of a run folder (``ikem-train plot RUN``): training curves and a confusion matrix.

- ``RUN/curves.png`` (always) from ``metrics.jsonl``, one panel per kind of value the run
  logged, three a row (:func:`curves_px`: 1500 x 450 pixels per row), epochs on the x-axis:

  * loss: ``loss`` (pretraining, distillation, fine-tuning) with each loss group
    (``nce``, ``cross``, ``ikem``, ``distill``) summed over its modalities, or
    ``train_loss`` (linear evaluation);
  * loss parts: every ``loss/<group>/<modality>``, colour = modality, line style = group;
  * accuracy (%): ``top1``, ``top5`` and ``head_top1/<modality>`` (linear evaluation: the
    fused classifier and each of its heads alone, labelled so: not a modality's own
    classifier, which is ``per_modality_top1`` in results.json), or ``val/top1``, ``val/top5``,
    ``val/top1/<modality>`` (fine-tuning);
  * learning rate: ``lr``;
  * samples/s: ``samples_per_s`` (training jobs).

  A modality keeps its colour in every panel; log scale for losses spanning over 50x.

- ``RUN/confusion.png`` (linear evaluation runs, which write ``scores.npz``): rows the true
  class, columns the class the fused logits predict, each row normalised to the share of
  that class's val samples (counts written in the cells when there are at most 20
  classes), class names on both axes; :func:`confusion_px` pixels square. The most confused
  pairs are returned for the terminal.

Class names come from the run's store (``results.json`` names it) through
:func:`ikem_data.class_names.store_class_names`, else from the sample names in
``scores.npz``, else ``class c``. matplotlib draws on its Agg canvas (no display).
Files are written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

DPI = 100
#: Pixels of one row of ``curves.png`` (up to 3 panels a row): see :func:`curves_px`.
CURVES_ROW_PX = (1500, 450)
#: Panels of ``curves.png`` in order: title -> does a metrics key belong to it.
PANELS = (
    ("loss", lambda k: k in ("loss", "train_loss")),
    ("loss parts", lambda k: k.startswith("loss/")),
    ("accuracy (%)", lambda k: k.split("/")[0] in ("top1", "top5", "head_top1") or k.startswith(("val/top1", "val/top5"))),
    ("learning rate", lambda k: k == "lr"),
    ("samples/s", lambda k: k == "samples_per_s"),
)
#: Line style of each loss group ``loss/<group>/<modality>``; a modality keeps one colour everywhere.
GROUP_STYLES = {"nce": "-", "cross": "--", "ikem": ":", "distill": "-."}
#: The most confused (true, predicted) pairs reported.
TOP_PAIRS = 10


class PlotError(ValueError):
    """A run folder that cannot be plotted (no metrics); the message says why."""


def curves_px(num_panels: int) -> tuple[int, int]:
    """(width, height) of ``curves.png`` with ``num_panels`` panels: 1500 x 450 per row of three."""
    rows = max(1, math.ceil(int(num_panels) / 3))
    return CURVES_ROW_PX[0], CURVES_ROW_PX[1] * rows


def confusion_px(num_class: int) -> int:
    """Side of ``confusion.png`` in pixels: 400 + 14 per class, within 800..2400."""
    return int(min(2400, max(800, 400 + 14 * int(num_class))))


def read_metrics(run_dir) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` (unreadable lines, and records whose ``epoch``
    is not a whole number >= 0, skipped).

    Raises:
        PlotError: no such folder, no ``metrics.jsonl``, or not one record in it.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise PlotError(f"no run folder at {run}")
    path = run / "metrics.jsonl"
    if not path.is_file():
        extra = " (KNN runs write results.json and predictions.npz only)" if (run / "predictions.npz").is_file() else ""
        raise PlotError(f"{run} has no metrics.jsonl: give the folder of a pretrain, distill, linear or finetune "
                        f"run that finished an epoch{extra}")
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # a line nested thousands deep recurses in the decoder
            continue
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
            records.append(record)
    if not records:
        raise PlotError(f"{path} holds no metrics record yet (the run has not finished an epoch)")
    return records


def _series(records):
    """{key: (epochs, values)} of every finite numeric entry (the last record per epoch wins)."""
    by_epoch = {}
    for record in records:
        by_epoch[int(record["epoch"])] = record  # a resumed run may log an epoch again
    out = {}
    for epoch in sorted(by_epoch):
        for key, value in by_epoch[epoch].items():
            if key in ("epoch", "step", "seconds", "kind") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                out.setdefault(key, ([], []))
                out[key][0].append(epoch)
                out[key][1].append(float(value))
    return out


def save_figure(figure, path: Path):
    """Write ``figure`` to ``path`` (PNG) under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        figure.savefig(partial, dpi=DPI)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def new_figure(width, height, **kwargs):
    """A matplotlib ``Figure`` of ``width`` x ``height`` pixels on the Agg canvas (no display);
    ``kwargs`` go to ``Figure`` (e.g. ``layout="constrained"``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, **kwargs)
    FigureCanvasAgg(figure)
    return figure


def _modality_colour(name):
    from ikem_data.names import MODALITIES

    index = MODALITIES.index(name) if name in MODALITIES else len(MODALITIES)
    return f"C{index % 10}"


def _split_part(key):
    """``loss/<group>/<modality>`` -> (group, modality); other keys -> (rest, None)."""
    rest = key.split("/", 1)[1]
    group, _, modality = rest.partition("/")
    return (group, modality) if modality else (rest, None)


def cross_phase_start(series) -> int | None:
    """The first epoch that logged a cross-phase term (``loss/cross/*``, ``loss/ikem/*``) when
    earlier epochs did not: the loss jumps there because terms are added, not because training
    went wrong, so the curves mark it. None when there is no such epoch."""
    first = min((series[k][0][0] for k in series if k.startswith(("loss/cross/", "loss/ikem/"))), default=None)
    start = min((epochs[0] for epochs, _ in series.values()), default=None)
    return first if first is not None and first > start else None


def _draw_panel(ax, name, keys, series) -> int:
    """Draw one panel; returns how many lines it holds."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    drawn = []

    def line(key, values=None, **style):
        epochs, ys = series[key] if values is None else values
        if len(epochs) == 1 and style.get("label"):  # a lone point: say so rather than leave a dot unexplained
            style["label"] += f" (epoch {epochs[0]} only)"
        ax.plot(epochs, ys, marker="o", markersize=6 if len(epochs) == 1 else 3, **style)
        drawn.append(key)

    if name == "loss":
        for key in keys:  # thin and on top, so a group sum equal to it (nce before the cross phase) shows around it
            line(key, color="black", linewidth=1.2, zorder=3, label="total" if key == "loss" else "train loss")
        groups = {}  # the parts of each group summed, at the epochs where the group ran
        for key in series:
            if key.startswith("loss/"):
                group, modality = _split_part(key)
                if modality is not None:
                    for epoch, value in zip(*series[key]):
                        groups.setdefault(group, {}).setdefault(epoch, 0.0)
                        groups[group][epoch] += value
        for group, sums in sorted(groups.items()):
            epochs = sorted(sums)
            line(None, (epochs, [sums[e] for e in epochs]), color="0.6", linewidth=4 if group == "nce" else 1.6,
                 linestyle=GROUP_STYLES.get(group, "-"), zorder=2, label=f"{group} (sum over modalities)")
        if groups:
            ax.legend(fontsize=7, framealpha=0.8)
    elif name == "loss parts":
        groups, modalities = [], []
        for key in keys:
            group, modality = _split_part(key)
            colour = _modality_colour(modality) if modality else None
            line(key, color=colour, linewidth=1.2, linestyle=GROUP_STYLES.get(group, "-"),
                 label=None if modality else group)
            groups += [group] if group not in groups else []
            modalities += [modality] if modality and modality not in modalities else []
        handles = [Line2D([], [], color=_modality_colour(m), label=m) for m in modalities]
        handles += [Line2D([], [], color="grey", linestyle=GROUP_STYLES.get(g, "-"), label=g) for g in groups
                    if modalities]
        ax.legend(handles=handles or None, fontsize=7, framealpha=0.8, ncol=2 if len(handles) > 6 else 1)
    elif name == "accuracy (%)":
        for key in keys:
            epochs, values = series[key]
            tail = key.rsplit("/", 1)[-1]
            top5 = "top5" in key
            if tail in ("top1", "top5"):  # the fused classifier
                style = dict(color="black", linewidth=2.2 if not top5 else 1.4, linestyle="--" if top5 else "-",
                             label=f"{'top-5' if top5 else 'top-1'} fused")
            else:
                what = f"{tail} head of the fused classifier" if key.startswith("head_") else f"{tail} stream"
                style = dict(color=_modality_colour(tail), linewidth=1.2, label=f"top-1, {what}")
            line(key, (epochs, [100 * v for v in values]), **style)
        ax.legend(fontsize=7, framealpha=0.8, ncol=2 if len(keys) > 6 else 1)
    else:  # the lr holds from one logged epoch to the next: a step
        for key in keys:
            line(key, color="C0", linewidth=1.4, drawstyle="steps-pre" if key == "lr" else "default")
    cross = cross_phase_start(series)
    if cross is not None and name in ("loss", "loss parts", "accuracy (%)"):
        ax.axvline(cross - 0.5, color="tab:red", linewidth=1, linestyle=":", zorder=1)
        ax.annotate(f"cross phase from epoch {cross}", (cross - 0.5, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, -3), textcoords="offset points", va="top", fontsize=7, color="tab:red")
    ax.set_title(name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.grid(alpha=0.3)
    if name.startswith("loss"):
        values = [v for key in keys for v in series[key][1]]
        if values and min(values) > 0 and max(values) / min(values) > 50:
            ax.set_yscale("log")
    return len(drawn)


def plot_curves(records, out, title="") -> dict:
    """Draw the curves of metrics ``records`` into ``out`` (:func:`curves_px` pixels).

    Panels, in this order and only when there is something to draw (three a row): the total
    loss with each loss group summed over its modalities; every ``loss/<group>/<modality>``
    part (colour = modality, line style = group); accuracy in %; learning rate; samples/s.

    The epoch where a cross phase's terms start is marked (the total loss jumps there).

    Returns:
        ``{"path", "panels": {panel title: [metrics keys]}, "lines": {panel title: lines drawn},
        "cross_phase_from": epoch or None, "size"}``.

    Raises:
        PlotError: the records hold none of the known metrics.
    """
    series = _series(records)
    panels = [(name, [k for k in sorted(series, key=_order) if belongs(k)]) for name, belongs in PANELS]
    panels = [(name, keys) for name, keys in panels if keys]
    if not panels:
        raise PlotError(f"the metrics records hold no loss, accuracy, lr or samples/s values "
                        f"(keys: {', '.join(sorted(series)) or 'none'})")
    size = curves_px(len(panels))
    figure = new_figure(*size, layout="constrained")
    axes = figure.subplots(math.ceil(len(panels) / 3), 3, squeeze=False).ravel()
    lines = {name: _draw_panel(ax, name, keys, series) for ax, (name, keys) in zip(axes, panels)}
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if title:
        figure.suptitle(title)
    save_figure(figure, Path(out))
    return {"path": str(out), "panels": {name: keys for name, keys in panels}, "lines": lines,
            "cross_phase_from": cross_phase_start(series), "size": size}


def _order(key):
    """Totals and fused values first, then parts and modalities alphabetically."""
    return (key.count("/") - (1 if key.startswith("val/") else 0), key)


# -- confusion ----------------------------------------------------------------------------


def load_scores(run_dir) -> dict | None:
    """Arrays of ``run_dir/scores.npz`` (linear evaluation), checked as ``fuse`` checks them,
    or None when there is none.

    Raises:
        FuseError: scores that linear evaluation does not write (see
            :func:`ikem_train.eval.fuse.load_scores`).
    """
    from ikem_train.eval import fuse

    if not (Path(run_dir) / "scores.npz").is_file():
        return None
    return fuse.load_scores(run_dir)


def run_class_names(run_dir, num_class, sample_names=None, labels=None) -> list[str]:
    """Class names for a run: its store's (``results.json`` ``store``), else from sample names.

    Returns:
        at least ``num_class`` names, ``"class c"`` where nothing better is known.
    """
    from ikem_data.class_names import names_from_samples, pad_names, store_class_names

    results = Path(run_dir) / "results.json"
    store = None
    if results.is_file():
        try:
            store = json.loads(results.read_text()).get("store")
        except (json.JSONDecodeError, AttributeError, RecursionError):
            store = None
    if store:
        try:
            from ikem_data.store import open_store

            with open_store(store, "r") as handle:
                return store_class_names(handle, num_class)
        except (OSError, ValueError, KeyError):
            pass  # the store moved or is gone: fall back to the sample names
    table = names_from_samples(sample_names, labels) if sample_names is not None else None
    return pad_names(table, num_class)


def confusion_matrix(labels, predicted, num_class) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_class, num_class), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def confused_pairs(matrix, names, top=TOP_PAIRS) -> list[dict]:
    """The largest off-diagonal cells: ``{"true", "predicted", "count", "share"}`` (share of the
    true class's samples), largest count first, ties by share then class order; zero cells left out."""
    rows = matrix.sum(1)
    pairs = [(int(matrix[i, j]), matrix[i, j] / rows[i], i, j) for i in range(len(matrix)) for j in range(len(matrix))
             if i != j and matrix[i, j] > 0]
    pairs.sort(key=lambda p: (-p[0], -p[1], p[2], p[3]))
    return [{"true": names[i], "predicted": names[j], "true_label": i, "predicted_label": j, "count": c,
             "share": float(s)} for c, s, i, j in pairs[:top]]


def _short(name, width=28):
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_confusion(matrix, names, out, title="") -> dict:
    """Draw the row-normalised confusion ``matrix`` with class ``names`` into ``out``.

    Returns:
        ``{"path", "size"}`` (:func:`confusion_px` pixels square).
    """
    num_class = len(matrix)
    side = confusion_px(num_class)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    figure = new_figure(side, side, layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, shrink=0.6, label="share of the true class's val samples")
    font = 9 if num_class <= 30 else 6 if num_class <= 60 else 5
    labels = [_short(n) for n in names[:num_class]]
    ax.set_xticks(range(num_class), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(num_class), labels, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if num_class <= 20:
        for i in range(num_class):
            for j in range(num_class):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(figure, Path(out))
    return {"path": str(out), "size": (side, side)}


def plot_run(run_dir) -> dict:
    """``RUN/curves.png`` and, for a linear evaluation run, ``RUN/confusion.png``.

    Returns:
        ``{"curves": {...}, "confusion": {...} or None, "confused_pairs": [...], "top1": float or None,
        "num_class": int or None}``.

    Raises:
        PlotError: no run folder, no metrics (nothing is written then).
        OutputError: ``RUN/curves.png`` or ``RUN/confusion.png`` is a folder (or pipe, device).
    """
    from ikem_data.outputs import check_output_file

    run = Path(run_dir)
    records = read_metrics(run)
    for name in ("curves.png", "confusion.png"):  # before drawing, not when the first picture is done
        check_output_file(run / name, "plot's output")
    kinds = sorted({str(r.get("kind", "linear")) for r in records})
    curves = plot_curves(records, run / "curves.png", title=f"{run.name}: {', '.join(kinds)}")
    scores = load_scores(run)
    if scores is None or "fused" not in scores or "label" not in scores:
        return {"curves": curves, "confusion": None, "confused_pairs": [], "top1": None, "num_class": None}
    fused, labels = scores["fused"], scores["label"].astype(np.int64)
    num_class = int(max(fused.shape[1], labels.max() + 1 if labels.size else 0))
    names = run_class_names(run, num_class, scores.get("name"), labels)
    predicted = fused.argmax(1)
    matrix = confusion_matrix(labels, predicted, num_class)
    top1 = float((predicted == labels).mean()) if labels.size else float("nan")
    modalities = ", ".join(str(m) for m in scores.get("modalities", [])) or "fused"
    confusion = plot_confusion(matrix, names, run / "confusion.png",
                               title=f"{run.name}: linear evaluation, fused top-1 {100 * top1:.1f} % "
                                     f"on {labels.size} val samples\n({modalities})")
    return {"curves": curves, "confusion": confusion, "confused_pairs": confused_pairs(matrix, names),
            "top1": top1, "num_class": num_class}
