"""`ikem-train plot`: pictures of a run folder (logic in ikem_train.pictures.plots)."""

import click

from ikem_cli.needs import needs_packages


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=str))
def plot(run_dir):
    """Draw RUN's curves (losses and their parts, lr, samples/s, top-1/top-5 per modality and fused)
    from metrics.jsonl into RUN/curves.png; for a linear evaluation run also the confusion matrix of
    the fused val predictions into RUN/confusion.png, listing the most confused class pairs.

    \b
    Example:
      ikem-train plot runs/linear-student
    """
    from ikem_train.pictures.plots import plot_run

    with needs_packages("ikem-train plot", ("matplotlib", "PIL"), "matplotlib"):
        try:
            res = plot_run(run_dir)
        except (ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc).replace("\n", " ")) from None
    curves = res["curves"]
    panels = "; ".join(f"{name}: {n} curve{'s' if n != 1 else ''}" for name, n in curves["lines"].items())
    click.echo(f"{curves['path']}: {panels}")
    if res["confusion"] is None:
        return
    click.echo(f"{res['confusion']['path']}: {res['num_class']} classes, val top-1 {100 * res['top1']:.2f} %")
    pairs = res["confused_pairs"]
    if not pairs:
        click.echo("no val sample was confused with another class")
        return
    click.echo("most confused (true -> predicted: val samples, share of the true class):")
    for p in pairs:
        click.echo(f"  {p['true']} -> {p['predicted']}: {p['count']} ({100 * p['share']:.1f} %)")
