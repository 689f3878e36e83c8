"""Every ``ikem-train`` job as one function: the CLI and the demo call these, nothing else.

Each job takes a store, a benchmark, a run folder, a config (a YAML path plus
``section.key=value`` overrides, the file's values over the defaults) and returns a result
dict; ``log`` receives one-line messages. All checks (config, checkpoint kind and
modalities, store/checkpoint agreement, option conflicts) run *before* the run folder is
created, so a refused job writes nothing.

- :func:`pretrain`, :func:`distill`: self-supervised training (:mod:`ikem_train.training.loop`).
- :func:`linear`, :func:`knn`: frozen-feature evaluation of a checkpoint's encoders (or of
  randomly initialised ones, the no-pretraining baseline).
- :func:`finetune`: encoders and classifiers trained end to end on labels: fine-tuning,
  semi-supervised (a labelled fraction) or supervised from scratch.

Every run folder gets ``config.yaml``; evaluation runs also ``results.json``.

Under torchrun (``torchrun ... -m ikem_train pretrain ...``) every process calls the same
job: the training jobs (pretrain, distill, finetune) run on all of them through
:mod:`ikem_train.training.distributed`, with rank 0 the one writer and logger; the frozen-feature
evaluations (linear, knn) run on rank 0 alone and return None on the other ranks at once.
"""

from ikem_train.jobs.frozen import PROTOCOLS, FrozenFeatures, frozen_evaluation, knn, linear
from ikem_train.jobs.pretraining import distill, load_teacher, pretrain
from ikem_train.jobs.supervised import finetune

__all__ = ["PROTOCOLS", "FrozenFeatures", "distill", "finetune", "frozen_evaluation", "knn", "linear",
           "load_teacher", "pretrain"]
