"""`ikem-data info`: what a store holds, how it was made and whether it is complete."""

import json

import click

from ikem_data.formats.registry import FORMATS

# Stage keys shown in the overview of a stage, not repeated under "other".
_SHOWN = {"complete", "params", "failed", "pre_failed", "ignored"}
# Root attributes shown in the overview, not repeated at the end.
_ROOT_SHOWN = ("format", "version", "ikem_version", "gendata", "layout", "every_chunk_stored")
# Said of a complete store without splits/ when its gendata stage gives no reason.
_NO_BENCHMARK = ("training needs a benchmark (splits/<name>/train and val); for Kinect input, add a split "
                 "column (train or val on every row) to the labels table and rerun gendata with --overwrite")


def _stats(values):
    import numpy as np

    values = np.asarray(values)
    if values.size == 0:
        return "none"
    return (f"min {int(values.min())}, median {float(np.median(values)):g}, mean {float(values.mean()):.1f}, "
            f"max {int(values.max())}")


def describe(store, max_failed=20):
    """Lines of text describing ``store`` (an open :class:`ikem_data.store.Store`)."""
    import numpy as np

    from ikem_data.layouts import DEFAULT_LAYOUT

    attrs = store.attrs.to_dict()
    lines = [f"store:     {store.path} ({store.kind}, {attrs.get('format')} v{attrs.get('version')}, "
             f"ikem {attrs.get('ikem_version')})"]
    gen = attrs.get("gendata")
    if gen is None:
        lines.append("gendata:   not run")
    else:
        params = gen.get("params", {})
        n = gen.get("n_samples", gen.get("written", 0))
        state = "complete" if gen.get("complete") else (
            f"INCOMPLETE: {gen.get('written', 0)} samples written, {gen.get('next_file', 0)} of "
            f"{params.get('n_inputs', '?')} files done (rerun the same gendata command to continue)")
        lines.append(f"gendata:   {state}")
        fmt = params.get("input_format")
        lines.append(f"dataset:   {params.get('dataset')}")
        lines.append(f"source:    {fmt} ({FORMATS[fmt].raw if fmt in FORMATS else 'unknown format'}) from {params.get('raw')}; "
                     f"bodies: {params.get('body_policy')}")
        lines.append(f"samples:   N = {n}; ignored by list: {gen.get('skipped', 0)}; failed: {len(gen.get('failed', []))}")
        if "raw/xyz" in store:
            lines.append(f"raw/xyz:   {tuple(store['raw/xyz'].shape)} {store['raw/xyz'].dtype} "
                         f"(N, C, T_max, V, M); T_max = {gen.get('t_max')}")
        if n and "raw/frames" in store:
            frames = np.asarray(store["raw/frames"][:n])
            bodies = np.asarray(store["raw/bodies"][:n])
            lines.append(f"frames:    {_stats(frames)}; over 300: {int((frames > 300).sum())}")
            counts = ", ".join(f"{int(b)}: {int(c)}" for b, c in zip(*np.unique(bodies, return_counts=True)))
            lines.append(f"bodies:    {counts}  (distinct bodies per sample: samples)")
            labels = np.asarray(store["raw/label"][:n])
            lines.append(f"labels:    {np.unique(labels).size} classes (0-based, {int(labels.min())}..{int(labels.max())})")
        lines.append("params:    " + ", ".join(f"{k}={v}" for k, v in params.items()))
        failed = gen.get("failed", [])
        if failed:
            lines.append(f"failed files ({len(failed)}):")
            for item in failed[:max_failed]:
                lines.append(f"  {item.get('reason') or item.get('file')}")
            if len(failed) > max_failed:
                lines.append(f"  ... {len(failed) - max_failed} more (ikem-data info --json)")
    layout = attrs.get("layout")
    lines.append(f"layout:    {layout}" if layout else
                 f"layout:    not recorded (a store made before ikem recorded layouts: {DEFAULT_LAYOUT})")
    benchmarks = store.benchmarks()
    if not benchmarks and gen is not None and gen.get("complete"):
        lines.append("splits:    none: this store has no benchmark to train or evaluate on")
        for note in gen.get("notes") or [_NO_BENCHMARK]:
            lines.append(f"  note: {note}")
    elif gen is not None:
        for note in gen.get("notes") or []:
            lines.append(f"note:      {note}")
    if benchmarks:
        lines.append("splits:")
        for name in benchmarks:
            sizes = []
            for part in ("train", "val"):
                try:
                    sizes.append(f"{part} {len(store.split(name, part))}")
                except KeyError:
                    sizes.append(f"{part} -")
            lines.append(f"  {name:<12} " + ", ".join(sizes))
    for stage, value in attrs.items():
        if stage in _ROOT_SHOWN or not isinstance(value, dict):
            continue
        state = "complete" if value.get("complete") else "INCOMPLETE"
        lines.append(f"{stage}: {state}")
        if isinstance(value.get("params"), dict):
            lines.append("  params: " + ", ".join(f"{k}={v}" for k, v in value["params"].items()))
        for key, item in value.items():
            if key not in _SHOWN:
                lines.append(f"  {key}: {item}")
    for stage, value in attrs.items():
        if stage not in _ROOT_SHOWN and not isinstance(value, dict):
            lines.append(f"{stage}: {value}")
    return lines


@click.command()
@click.argument("store", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print all root attributes as JSON instead.")
def info(store, as_json):
    """Show what STORE holds: dataset, N, splits, frame statistics, bodies, completeness, parameters."""
    from ikem_data.store import open_store

    try:
        handle = open_store(store, "r")
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    with handle:
        if as_json:
            click.echo(json.dumps(handle.attrs.to_dict(), indent=2))
        else:
            click.echo("\n".join(describe(handle)))
