"""`ikem-data gendata`: raw skeletons of any registered input format into an ikem store."""

import os

import click

from ikem_data.formats.registry import FORMATS

_DATASETS = sorted({d for fmt in FORMATS.values() for d in fmt.datasets})


@click.command()
@click.option("--raw", type=click.Path(path_type=str),
              help="The input, per --input-format: " + "; ".join(f"{f.name}: {f.raw}" for f in FORMATS.values()) + ".")
@click.option("--out", required=True, type=click.Path(path_type=str),
              help="Store to write: a Zarr v3 directory (default), or one HDF5 file when the name ends in .h5/.hdf5.")
@click.option("--input-format", type=click.Choice(list(FORMATS)), default="ntu",
              show_default=True,
              help="ntu: .skeleton files. kinect-csv: KinectReader CSV captures (timestamp + 25 x (x, y, z, state) "
                   "per line) listed in --labels. pyskl: a 3D NTU annotation pickle of pyskl/mmaction2 (read with a "
                   "restricted unpickler; its splits become ikem benchmarks; 2D *_hrnet.pkl files are refused). "
                   "pku-mmd: PKU-MMD phase I or II, one sample per labelled segment (benchmarks pku1-xsub, "
                   "pku1-xview or pku2-xsub, pku2-xview). nwucla: NW-UCLA's all_sqe JSON files (nwucla-xview). utd-mhad: "
                   "UTD-MHAD's .mat skeletons, read with scipy (utd-xsub). msrc12: MSRC-12 CSV + .tagstream pairs, "
                   "one sample per action point, cut by the window rule recorded in the store (msrc12-xsub). "
                   "The last three record the 20-joint Kinect v1 layout.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=str),
              help="kinect-csv only: UTF-8 CSV with a header row file,label[,split]; file relative to this CSV's "
                   "folder (or to --raw), ASCII, each capture once; label a 0-based int class; split train/val "
                   "(written as splits/custom; without it the store has no benchmark, which training needs).")
@click.option("--dataset", type=click.Choice(_DATASETS), default=None,
              help="NTU-60 (ntu60-xsub, ntu60-xview splits) or NTU-120 (also ntu120-xsub, ntu120-xset); for pyskl "
                   "input the pickle's own splits. Default: inferred from the names (setup > 17 or action > 60 means "
                   "ntu120). pku1/pku2: PKU-MMD phase I/II, default inferred from the split files present. The other "
                   "formats have one dataset each (the default).")
@click.option("--bodies", "body_policy", type=click.Choice(["listed", "tracked"]), default="listed",
              show_default=True,
              help="NTU files: listed: the first two bodies in each frame's listing order (the reference; "
                   "reproduces published pipelines). tracked: slots follow body IDs across frames and the two bodies "
                   "with the most motion are kept. (Other formats keep the bodies they come with.)")
@click.option("--max-bodies", type=click.IntRange(1, 4), default=None,
              help="Body slots M in raw/xyz. Default: 2; 1 for the one-person datasets (nwucla, utd-mhad, msrc12), "
                   "whose second slot would only be zeros that the encoders process for nothing.")
@click.option("--ignore-list", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Text file of sample names (one per line) to leave out. Default for NTU files: the official "
                   "missing-skeleton list of the dataset (302 NTU-60 / 535 NTU-120 names, packaged); none for the "
                   "other formats (PKU-MMD: video or <video>_<k> names).")
@click.option("--on-error", type=click.Choice(["stop", "skip"]), default="stop", show_default=True,
              help="A malformed input (bad syntax, a count the file cannot hold, a value that cannot be stored: "
                   "inf, NaN, an integer beyond int64; a pyskl annotation of the wrong shape; a bad PKU-MMD label "
                   "row or segment): stop with its file and line, or skip it, recording file and reason in the "
                   "store (ikem-data info lists them). Not part of the store's identity: an unfinished store may be "
                   "continued with the other choice.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Parser processes. Default: all cores (os.cpu_count()).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Samples per chunk of raw/xyz (fewer when sequences are so long that a chunk would pass "
                   "256 MiB, which bounds gendata's memory).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing store made with other arguments, or one that cannot be opened "
                   "(otherwise refused). A file or folder that is not an ikem store is never replaced.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def gendata(raw, out, input_format, labels, dataset, body_policy, max_bodies, ignore_list, on_error, workers,
            chunk_size, overwrite, no_progress):
    """Parse raw skeletons (NTU, Kinect CSV, pyskl, PKU-MMD, NW-UCLA, UTD-MHAD, MSRC-12) into a store's raw/ part.

    raw/xyz is (N, 3, T_max, V, M) float32 metres (V = 25 Kinect v2, 20 Kinect v1), zero-padded to the longest sequence
    stored (never truncated), with frame counts, bodies, 0-based labels, ids, names and
    the split index arrays of every benchmark the dataset supports.

    \b
    ikem-data gendata --raw nturgb+d_skeletons --out ntu60.zarr
    ikem-data gendata --input-format pyskl --raw ntu60_3danno.pkl --out ntu60.zarr
    ikem-data gendata --input-format pku-mmd --raw PKUMMD/ --dataset pku1 --out pku1.zarr
    ikem-data gendata --input-format nwucla --raw NW-UCLA/all_sqe --out nwucla.zarr

    Every file is parsed and checked first (in parallel), so a malformed one stops the
    run before anything is written (or, with --on-error skip, is left out and never sets
    T_max). Rerunning the same command continues an interrupted run (Ctrl-C or a kill is
    safe; parser workers exit with their parent) and leaves a complete store alone; a
    file not yet written may meanwhile be fixed or removed.
    """
    from ikem_data.gendata.run import GendataError
    from ikem_data.gendata.run import gendata as run

    try:
        run(raw, out, input_format=input_format, dataset=dataset, labels=labels, body_policy=body_policy,
            max_bodies=max_bodies, ignore_list=ignore_list, on_error=on_error, chunk_size=chunk_size,
            workers=workers or os.cpu_count(), overwrite=overwrite, progress=not no_progress,
            log=lambda message: click.echo(message, err=True))
    except GendataError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: {out} is resumable; rerun the same command to continue", err=True)
        raise SystemExit(130) from None
