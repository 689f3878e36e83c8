"""`ikem-train demo`: the whole method with its baselines, on the bundled MIT Kinect captures or a store."""

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
@click.option("--store", type=click.Path(exists=True), default=None,
              help="Run the demo's protocol on this store (with modalities) instead of the bundled captures.")
@click.option("--benchmark", default=None, help="The store's benchmark, e.g. nwucla-xview (required with --store).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Run config of every job. Default: the bundled demo's settings, or with --store the packaged "
                   "small-data settings (ikem_train/small_data.yaml: queue 512, momentum 0.99, lr 0.01, 10 epochs).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Extra config override for every job, e.g. --set optim.epochs=2 (repeatable).")
@friendly_errors
def demo(out, device, seeds, store, benchmark, config, overrides):
    """Pretrain, distil and evaluate, then print a table: IKEM teacher, student and
    SkeletonCLR (joint) against randomly initialised encoders and a supervised model,
    linear and KNN, mean ± std over seeds, with how many std each pretrained row lies
    above its random baseline.

    Without --store: the bundled MIT-licensed Kinect v2 captures, a smoke run of 4 to 8
    minutes a seed on 2 quiet CPU cores (README's sample output gives the time measured) that
    shows the pipeline working; it is not a benchmark. With
    --store and --benchmark: the same rows on your data (e.g. an NW-UCLA store from
    `ikem-data gendata --input-format nwucla` and `ikem-data modalities`).

    \b
    ikem-train demo
    ikem-train demo --store nwucla.zarr --benchmark nwucla-xview --seeds 3
    """
    from ikem_train.demo import DemoError, run_demo

    if store is not None and benchmark is None:
        raise DemoError("--store needs --benchmark (one of the store's benchmarks; `ikem-data info STORE` lists them)")
    run_demo(out or f"demo-output/{time.strftime('%Y%m%d-%H%M%S')}", device=device, overrides=overrides,
             seeds=seeds, echo=click.echo, store=store, benchmark=benchmark, config=config)
