"""`ikem-data export`: a store in the reference pipeline's file format, or as a pyskl pickle."""

import click


@click.command()
@click.argument("store", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["reference", "pyskl"]), default="reference", show_default=True,
              help="reference: one benchmark as {train,val}_position.npy and {train,val}_label.pkl (needs "
                   "modalities). pyskl: every sample's raw data and every benchmark's splits as one pyskl/mmaction2 "
                   "annotation pickle.")
@click.option("--benchmark", help="reference format: the benchmark under splits/, e.g. ntu60-xsub or ntu60-xview.")
@click.option("--to", "to", required=True, type=click.Path(),
              help="reference format: folder for the four files (created). pyskl format: the .pkl file.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="pyskl format: keypoint dtype; float32 keeps the store's values, float16 is what pyskl's own "
                   "files hold (half the size, coordinates rounded by up to 2^-11 of their size).")
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
def export(store, fmt, benchmark, to, dtype, overwrite):
    """Export STORE for other code.

    reference: {train,val}_position.npy (N,3,50,25,2) and {train,val}_label.pkl, the label
    pickle being IKEM's (names, labels, frames), so the published IKEM and CrosSCLR code can
    be fed from an ikem store and compared. pyskl: {"split", "annotations"} with keypoint
    (M, T, 25, 3) per sample and the splits under pyskl's names (xsub_train, xview_val, ...),
    so pyskl/mmaction2 can train on ikem-prepared data.

    \b
    ikem-data export ntu60.zarr --benchmark ntu60-xsub --to ntu60_frame50/xsub
    ikem-data export ntu60.zarr --format pyskl --to ntu60_from_ikem.pkl
    """
    from ikem_data.export import ExportError, export_benchmark, export_pyskl

    try:
        if fmt == "pyskl":
            if benchmark is not None:
                raise ExportError("--benchmark applies to --format reference; a pyskl export holds every benchmark")
            result = export_pyskl(store, to, overwrite=overwrite, dtype=dtype)
        else:
            if benchmark is None:
                raise ExportError("--benchmark is required for --format reference (e.g. ntu60-xsub)")
            result = export_benchmark(store, benchmark, to, overwrite=overwrite)
    except (ExportError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "pyskl":
        splits = ", ".join(f"{name} {count}" for name, count in result["splits"].items()) or "no splits"
        click.echo(f"{result['samples']} samples ({splits}) -> {result['path']}")
        return
    for part, info in result.items():
        click.echo(f"{part}: {info['samples']} samples -> {info['position']}, {info['label']}")
