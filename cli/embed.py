"""`ikem-train embed`: a t-SNE map of frozen val features (logic in ikem_train.pictures.embed)."""

import click

from ikem_cli.needs import needs_packages

from ikem_cli.train_commands import _HELP_SET, _overrides, friendly_errors


@click.command()
@click.option("--store", required=True, type=click.Path(), help="ikem store (zarr folder or .h5 file).")
@click.option("--benchmark", required=True, help="Benchmark whose val split is drawn, e.g. ntu60-xsub.")
@click.option("--checkpoint", type=click.Path(), default=None,
              help="Pretrain, distill or finetune checkpoint whose frozen encoders make the features.")
@click.option("--random-init", is_flag=True,
              help="Use freshly initialised encoders instead (the no-pretraining baseline; seed data.seed).")
@click.option("--out", required=True, type=click.Path(), help="The picture, a .png (1200 x 900 pixels).")
@click.option("--modality", default="fused", show_default=True,
              help="One modality (e.g. joint), a comma list, or fused (every encoder: L2-normalised features "
                   "concatenated, as KNN fuses them).")
@click.option("--max-samples", type=click.IntRange(min=5), default=2000, show_default=True,
              help="Draw at most this many val samples (a random subset, seeded by data.seed).")
@click.option("--bn-recalibrate", is_flag=True,
              help="Recompute the encoders' BatchNorm statistics over the train split first.")
@click.option("--config", "config_path", type=click.Path(), default=None,
              help="YAML run config (data.seed, data.eval_batch_size, run.device).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_HELP_SET)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Device (default: the config's run.device, normally auto).")
@friendly_errors
def embed(store, benchmark, checkpoint, random_init, out, modality, max_samples, bn_recalibrate, config_path,
          overrides, device):
    """Map the frozen features of the val split to 2D with t-SNE, coloured by class (names in the legend).

    \b
    Example:
      ikem-train embed --store ntu60.zarr --benchmark ntu60-xsub \\
          --checkpoint runs/teacher/last.pt --modality joint --out tsne.png
    """
    from ikem_train.pictures.embed import embed as draw

    settings = {"evaluation.bn_recalibrate": "true" if bn_recalibrate else None}
    with needs_packages("ikem-train embed", ("sklearn", "matplotlib", "PIL", "scipy"), "scikit-learn matplotlib"):
        res = draw(store, benchmark, out, checkpoint=checkpoint, random_init=random_init, modality=modality,
                   max_samples=max_samples, config=config_path, overrides=_overrides(overrides, device, **settings),
                   log=click.echo)
    click.echo(f"{res['path']}: {res['samples']} of {res['val_samples']} val samples, {res['num_class']} classes, "
               f"{res['size'][0]}x{res['size'][1]} px")
