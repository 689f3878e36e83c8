"""`ikem-data show`: a 3D picture or animation of one stored sample (logic in ikem_data.show.sample)."""

import click

from ikem_cli.needs import needs_packages

_MODALITIES = "raw, joint, bone, motion, acceleration, rotation_axis, angular_velocity (alias omega)"


@click.command()
@click.argument("store", type=click.Path(path_type=str))
@click.option("--sample", required=True,
              help="Sample name (e.g. S001C001P001R001A001) or 0-based store index (e.g. 17).")
@click.option("--out", required=True, type=click.Path(path_type=str),
              help="Output file: .gif (animation), .mp4 (animation; needs ffmpeg) or .png (one frame, or --grid).")
@click.option("--modality", default="raw", show_default=True,
              help=f"What to draw: {_MODALITIES}. raw is raw/xyz as recorded; joint the preprocessed skeleton; "
                   "the others draw each joint's vector from that joint of the preprocessed skeleton.")
@click.option("--frames", default=None, metavar="A:B[:STEP]",
              help="0-based frames, end exclusive, like a Python slice (e.g. 0:60, 10:, ::2, or 40 for one frame). "
                   "Default: all.")
@click.option("--view", default=None, metavar="ELEV,AZIM",
              help="Camera elevation and azimuth in degrees (matplotlib's view_init). Default: 15,-70.")
@click.option("--grid", type=click.IntRange(min=1), is_flag=False, flag_value=8, default=None, metavar="[N]",
              help="Draw a still .png grid of N frames (default 8) spread evenly over --frames.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Frames per second of a .gif/.mp4.")
def show(store, sample, out, modality, frames, view, grid, fps):
    """Draw one sample of STORE as a 3D skeleton: both persons in colour, fixed equal axes, the
    frame counter and the action name in the title.

    \b
    Examples:
      ikem-data show ntu60.zarr --sample S001C001P001R001A001 --out a001.gif
      ikem-data show ntu60.zarr --sample 17 --modality bone --frames 0:50 --out bone.gif
      ikem-data show ntu60.zarr --sample S017C003P020R002A055 --grid --out a055.png
    """
    from ikem_data.show.sample import show as draw

    with needs_packages("ikem-data show", ("matplotlib", "PIL"), "matplotlib"):
        try:
            res = draw(store, sample, out, modality=modality, frames=frames, view=view, grid=grid, fps=fps)
        except (ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc).replace("\n", " ")) from None
    what = f"{len(res['frames'])} panels" if grid else (
        f"{len(res['frames'])} frames" if res["format"] != "png" else f"frame {res['frames'][0]}")
    click.echo(f"{res['path']}: {res['name']} ({res['label_name']}), {res['modality']}, {what}, "
               f"{res['size'][0]}x{res['size'][1]} px")
