"""`ikem-train demo`: the whole method on the bundled MIT Kinect captures."""

import time

import click

from ikem_cli.train_commands import friendly_errors


@click.command()
@click.option("--out", type=click.Path(), default=None,
              help="Output folder (default: demo-output/<date-time>, so earlier demos are kept).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Training device.")
@click.option("--seeds", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Repetitions behind each mean ± std (each trains its own teacher, student and supervised model).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Extra config override for every job, e.g. --set optim.epochs=2 (repeatable).")
@friendly_errors
def demo(out, device, seeds, overrides):
    """Pretrain, distil and evaluate on the bundled MIT-licensed Kinect v2 captures, then
    print a table: teacher and student against randomly initialised encoders and a
    supervised model, linear and KNN, mean ± std over seeds.

    A smoke run on 2 CPU cores that shows the whole pipeline working and the encoders
    learning; it is not a benchmark. The real NTU RGB+D workflow is in README.md.
    """
    from ikem_train.demo import run_demo

    run_demo(out or f"demo-output/{time.strftime('%Y%m%d-%H%M%S')}", device=device, overrides=overrides,
             seeds=seeds, echo=click.echo)
