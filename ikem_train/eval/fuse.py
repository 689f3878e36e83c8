"""Late fusion of saved linear-evaluation scores of separate runs (``ikem-train fuse``).

Each run folder holds ``scores.npz`` from :func:`ikem_train.eval.linear.linear_evaluate`
(``fused`` logits (n, C), ``label``, ``name``). The fused score of a sample is
``sum_r w_r * s_r`` where ``s_r`` are the run's logits (or their softmax, ``softmax=True``).
Runs must cover the same val samples in the same order (checked by name and label).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class FuseError(ValueError):
    """Runs that cannot be fused (missing scores, different samples); the message says which."""


def parse_run_spec(spec: str) -> tuple[Path, float]:
    """``"RUN_DIR"`` or ``"RUN_DIR:weight"`` -> (path, weight); weight defaults to 1.

    Raises:
        FuseError: a weight that is not a finite number.
    """
    path, sep, tail = spec.rpartition(":")
    if sep and path and not tail.startswith(("/", "\\")):
        try:
            weight = float(tail)
        except ValueError:
            raise FuseError(f"bad run spec {spec!r}: the part after ':' must be a weight, e.g. runs/joint:0.6") from None
        if not np.isfinite(weight):
            raise FuseError(f"bad run spec {spec!r}: weight must be finite")
        return Path(path), weight
    return Path(spec), 1.0


def load_scores(run_dir) -> dict:
    """Arrays of ``run_dir/scores.npz``, checked: ``fused`` (n, C) finite floats, ``label`` (n,) integers.

    Raises:
        FuseError: no scores file (run ``ikem-train linear`` first), or scores that are not
            what linear evaluation writes (a missing array, another shape or dtype,
            NaN / inf logits); the message names the file and the array.
    """
    path = Path(run_dir) / "scores.npz"
    if not path.is_file():
        raise FuseError(f"{path} not found: {run_dir} is not a finished linear evaluation; run "
                        "`ikem-train linear ... --run-dir NEW_FOLDER` and fuse that folder")
    with np.load(path, allow_pickle=False) as data:
        scores = {key: data[key] for key in data.files}
    fused, label = scores.get("fused"), scores.get("label")
    if fused is None or label is None:
        raise FuseError(f"{path} lacks {'fused' if fused is None else 'label'}: not a linear evaluation's scores")
    if fused.ndim != 2 or fused.dtype.kind != "f":
        raise FuseError(f"{path}: fused must be (n, C) float logits, got {fused.dtype} of shape {fused.shape}")
    if label.ndim != 1 or label.dtype.kind not in "iu" or len(label) != len(fused):
        raise FuseError(f"{path}: label must be ({len(fused)},) integers, got {label.dtype} of shape {label.shape}")
    bad = int((~np.isfinite(fused)).any(axis=1).sum())
    if bad:
        raise FuseError(f"{path}: fused holds NaN or inf logits for {bad} of {len(fused)} samples; "
                        "the linear evaluation diverged: run it again with a lower linear.lr")
    return scores


def topk(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Top-k accuracy of (n, C) scores (k capped at C)."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean()) if len(labels) else float("nan")


def _softmax(x):
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fuse_runs(specs, softmax: bool = False) -> dict:
    """Fuse the runs ``specs`` = [(run_dir, weight), ...].

    Returns:
        ``{"rows": [{"run", "weight", "top1", "top5"}...], "fused": {"top1", "top5"},
        "scores": (n, C) fused scores, "label": (n,)}``.

    Raises:
        FuseError: no runs, missing scores, or runs over different samples/classes.
    """
    if not specs:
        raise FuseError("give at least one RUN_DIR[:weight]")
    rows, total, ref = [], None, None
    for run_dir, weight in specs:
        data = load_scores(run_dir)
        if "name" not in data:  # fusing compares the samples by name (a bare KeyError printed "Error: name")
            raise FuseError(f"{Path(run_dir) / 'scores.npz'} lacks name: not a linear evaluation's scores")
        scores = data["fused"].astype(np.float64)
        if softmax:
            scores = _softmax(scores)
        if ref is None:
            ref = (run_dir, data)
        else:
            ref_dir, ref_data = ref
            if data["label"].shape != ref_data["label"].shape or not np.array_equal(data["name"], ref_data["name"]) \
                    or not np.array_equal(data["label"], ref_data["label"]):
                raise FuseError(f"{run_dir} and {ref_dir} scored different val samples; fuse runs of one store and benchmark")
            if scores.shape != total.shape:
                raise FuseError(f"{run_dir} has {scores.shape[1]} classes, {ref_dir} has {total.shape[1]}")
        label = data["label"]
        rows.append({"run": str(run_dir), "weight": weight, "top1": topk(scores, label, 1), "top5": topk(scores, label, 5)})
        total = weight * scores if total is None else total + weight * scores
    label = ref[1]["label"]
    return {"rows": rows, "fused": {"top1": topk(total, label, 1), "top5": topk(total, label, 5)},
            "scores": total, "label": label}


def format_table(result: dict) -> str:
    """A plain-text table: one line per run and the fused line, accuracies in %."""
    width = max([len(r["run"]) for r in result["rows"]] + [len("fused")])
    lines = [f"{'run':<{width}}  {'weight':>6}  {'top-1 %':>7}  {'top-5 %':>7}"]
    for r in result["rows"]:
        lines.append(f"{r['run']:<{width}}  {r['weight']:>6.3g}  {100 * r['top1']:>7.2f}  {100 * r['top5']:>7.2f}")
    f = result["fused"]
    lines.append(f"{'fused':<{width}}  {'':>6}  {100 * f['top1']:>7.2f}  {100 * f['top5']:>7.2f}")
    return "\n".join(lines)
