"""`ikem-data`: build and inspect ikem stores."""

import click

from ikem_cli.lazy import LazyGroup
from ikem_data import __version__


@click.group(
    cls=LazyGroup,
    lazy_commands={
        "gendata": "ikem_cli.gendata:gendata",
        "info": "ikem_cli.info:info",
        "modalities": "ikem_cli.modalities:modalities",
        "export": "ikem_cli.export:export",
        "show": "ikem_cli.show:show",
    },
)
@click.version_option(__version__, prog_name="ikem-data")
def main():
    """Turn raw NTU RGB+D (or Kinect v2 CSV) skeletons into an ikem store.

    \b
    Typical use:
      ikem-data gendata --raw nturgb+d_skeletons --out ntu60.zarr
      ikem-data modalities --out ntu60.zarr
      ikem-data info ntu60.zarr
      ikem-data show ntu60.zarr --sample S001C001P001R001A001 --out a001.gif
    """
