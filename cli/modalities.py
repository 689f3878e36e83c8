"""`ikem-data modalities`: IKEM preprocessing and the six modalities into a store."""

import click


@click.command()
@click.option("--out", "out", required=True, type=click.Path(),
              help="Store to add modalities/ to (in place), or the new store with --from.")
@click.option("--from", "source", type=click.Path(exists=True),
              help="Raw store of `ikem-data gendata` to copy raw/, splits/ and attributes from.")
@click.option("--t-length", default=50, show_default=True, type=int,
              help="Frames after the temporal resize (>= 3; the reference uses 50).")
@click.option("--rotation-sign", default="sequence", show_default=True,
              type=click.Choice(["sequence", "per_frame"]),
              help="Sign of the y-alignment angle: once per sequence (reference) or per frame (fix).")
@click.option("--bone-pairs", default="ikem", show_default=True, type=click.Choice(["ikem", "crossclr"]),
              help="IKEM bones with the unit torso normal (reference) or CrosSCLR/AimCLR bones.")
@click.option("--true-timeline/--no-true-timeline", default=True, show_default=True,
              help="Scale motion, acceleration and angular velocity by tau = 50 / header frames.")
@click.option("--on-empty", default="error", show_default=True, type=click.Choice(["error", "skip"]),
              help="A sample with no valid frame: stop with an error, or leave it zero and record it.")
@click.option("--chunk-size", default=64, show_default=True, type=int,
              help="Samples per chunk (of the arrays and of each step of work).")
@click.option("--workers", default=None, type=int, help="Numba threads (default: all cores).")
@click.option("--overwrite", is_flag=True, help="Replace modalities written with other parameters.")
@click.option("--no-progress", "--quiet", "no_progress", is_flag=True, help="No progress bar.")
def modalities(out, source, t_length, rotation_sign, bone_pairs, true_timeline, on_empty, chunk_size,
               workers, overwrite, no_progress):
    """Preprocess raw/xyz and write the six modalities (joint, motion, bone, acceleration,
    rotation_axis, angular_velocity), as the IKEM reference computes them.

    Preprocessing: each body centred on its spine-shoulder, the valid frames resized to
    --t-length, each frame's shoulders turned onto the x axis.

    \b
    ikem-data modalities --out ntu60.zarr
    ikem-data modalities --from raw.zarr --out ntu60.zarr --rotation-sign per_frame

    Resumable: a rerun continues an unfinished stage; a complete stage with the same
    parameters is left alone.
    """
    if workers is not None and workers < 1:
        raise click.ClickException(f"--workers must be >= 1, got {workers}")
    from ikem_data.modalities.stage import StageError, build_modalities
    from ikem_data.locks import LockedError

    try:
        status, attrs = build_modalities(
            out, source=source, t_length=t_length, rotation_sign=rotation_sign, bone_pairs=bone_pairs,
            true_timeline=true_timeline, on_empty=on_empty, chunk_size=chunk_size, workers=workers,
            overwrite=overwrite, progress=not no_progress)
    except (StageError, FileNotFoundError, LockedError) as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # not an ikem store, wrong version, ...
        raise click.ClickException(str(exc)) from None
    if status == "unchanged":
        click.echo(f"{out}: modalities already complete with these parameters; nothing to do")
        return
    empty = attrs.get("empty_samples") or []
    note = f"; {len(empty)} empty sample(s) left zero: {', '.join(empty[:5])}" if empty else ""
    click.echo(f"{out}: modalities {status} for {attrs['samples']} samples "
               f"({', '.join(attrs['params']['names'])}){note}")
