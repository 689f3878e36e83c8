"""`ikem-data export`: a benchmark of a store in the reference pipeline's file format."""

import click


@click.command()
@click.argument("store", type=click.Path(exists=True))
@click.option("--benchmark", required=True,
              help="Benchmark under splits/ of the store, e.g. ntu60-xsub or ntu60-xview.")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False),
              help="Folder for {train,val}_position.npy and {train,val}_label.pkl (created).")
@click.option("--overwrite", is_flag=True, help="Replace existing files in the folder.")
def export(store, benchmark, to, overwrite):
    """Write {train,val}_position.npy (N,3,50,25,2) and {train,val}_label.pkl.

    The label pickle is IKEM's (names, labels, frames), so the published IKEM and
    CrosSCLR code can be fed from an ikem store and compared.

    \b
    ikem-data export ntu60.zarr --benchmark ntu60-xsub --to ntu60_frame50/xsub
    """
    from ikem_data.export import ExportError, export_benchmark

    try:
        result = export_benchmark(store, benchmark, to, overwrite=overwrite)
    except (ExportError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    for part, info in result.items():
        click.echo(f"{part}: {info['samples']} samples -> {info['position']}, {info['label']}")
