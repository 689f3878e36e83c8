"""`ikem-train demo`: the whole method on the bundled MIT Kinect captures."""

import time

import click


@click.command()
@click.option("--out", type=click.Path(), default=None,
              help="Output folder (default: demo-output/<date-time>, so earlier demos are kept).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Training device.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Extra config override for every training step, e.g. --set optim.epochs=2 (repeatable).")
def demo(out, device, overrides):
    """Run gendata, modalities, teacher pretraining, distillation and linear evaluation
    on the bundled MIT-licensed Kinect v2 captures, then print a table of accuracies.

    A smoke run of a few minutes on 2 CPU cores that shows the whole pipeline working;
    it is not a benchmark. The real NTU RGB+D workflow is in README.md.
    """
    from ikem_train.demo import run_demo

    run_demo(out or f"demo-output/{time.strftime('%Y%m%d-%H%M%S')}", device=device, overrides=overrides)
