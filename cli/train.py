"""`ikem-train`: pretraining, distillation and evaluation over ikem stores."""

import click

from ikem_cli.lazy import LazyGroup
from ikem_data import __version__


@click.group(
    cls=LazyGroup,
    lazy_commands={
        "pretrain": "ikem_cli.train_commands:pretrain",
        "distill": "ikem_cli.train_commands:distill",
        "linear": "ikem_cli.train_commands:linear",
        "knn": "ikem_cli.train_commands:knn",
        "finetune": "ikem_cli.train_commands:finetune",
        "fuse": "ikem_cli.train_commands:fuse",
        "demo": "ikem_cli.demo:demo",
        "plot": "ikem_cli.plot:plot",
        "embed": "ikem_cli.embed:embed",
    },
)
@click.version_option(__version__, prog_name="ikem-train")
def main():
    """Self-supervised pretraining and evaluation on an ikem store.

    \b
    Typical use:
      ikem-train pretrain --store ntu60.zarr --benchmark ntu60-xsub \\
          --config configs/ntu60-xsub/ikem-teacher.yaml --run runs/teacher
      ikem-train distill --store ntu60.zarr --benchmark ntu60-xsub \\
          --teacher runs/teacher/last.pt --run runs/student
      ikem-train linear --store ntu60.zarr --benchmark ntu60-xsub \\
          --checkpoint runs/student/last.pt --run runs/linear
      ikem-train knn --store ntu60.zarr --benchmark ntu60-xsub \\
          --checkpoint runs/student/last.pt --run runs/knn
      ikem-train finetune --store ntu60.zarr --benchmark ntu60-xsub \\
          --checkpoint runs/student/last.pt --label-fraction 0.01 --run runs/semi1
      ikem-train plot runs/linear
      ikem-train embed --store ntu60.zarr --benchmark ntu60-xsub \\
          --checkpoint runs/student/last.pt --out tsne.png
    """
