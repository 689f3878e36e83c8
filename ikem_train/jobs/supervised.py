"""Training with labels: :func:`finetune` (fine-tuning, semi-supervised with a labelled fraction, or
supervised from scratch).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ikem_train.checkpoint import load_checkpoint
from ikem_train.config import config_from_dict, config_to_dict, load_config
from ikem_train.data.datasets import ModalityDataset
from ikem_train.eval import features as ev
from ikem_train.jobs.common import count_classes, encoder_source, job_processes, on_processes, reading_store, resume_base, train_split, write_json
from ikem_train.training.loop import resolve_device, run_folder, train


def finetune(store, benchmark, run_dir, *, checkpoint=None, from_scratch=False, modalities=None, config=None,
             overrides=(), resume=False, log=print) -> dict:
    """Fine-tune encoders and new classifiers end to end on the train split's labels.

    A UmURL checkpoint (or ``model.method: umurl`` from scratch) fine-tunes its one backbone
    with a linear classifier per requested feature (default the fused ``multimodal``, as
    UmURL's ``Downstream``), logits averaged.

    ``finetune.dropout`` replaces the encoders' dropout while fine-tuning (None: the
    checkpoint's, or ``model.dropout`` from scratch), ``finetune.epochs`` and
    ``finetune.milestones`` the schedule (None: ``optim.epochs``, ``optim.milestones``). ``finetune.label_fraction``
    (``--label-fraction``) fine-tunes on a seeded per-class
    subset (semi-supervised; the drawn store indices are saved as
    ``labelled_train_indices.npy``); ``from_scratch`` trains randomly initialised
    encoders (the supervised baseline). The schedule is the ``optim`` section; the val
    split is evaluated every ``finetune.eval_interval`` epochs and at the last.

    Under torchrun every rank trains (DDP); rank 0 alone evaluates the val split and
    writes the results.

    Returns:
        the dict written to ``results.json``: ``final`` and ``best_on_val`` (labelled),
        ``per_modality_top1``, per-class accuracy, baselines, ``encoder_changed`` (a
        comparison of the backbone weights before and after); None on ranks >= 1.

    Raises:
        ConfigError, CheckpointError, EvaluationError, StoreError, KeyError, TrainingError;
        ValueError: a label fraction that leaves a class without a sample.
    """
    from ikem_train.eval.finetune import FinetuneModel, label_subset
    from ikem_train.eval.linear import BEST_LABEL
    from ikem_train.methods.model import Encoder
    from ikem_train.nets.stgcn import stgcn_kwargs

    base = resume_base(run_dir, resume)
    if base is not None and checkpoint is None and not from_scratch:
        checkpoint, from_scratch = base.get("checkpoint"), bool(base.get("from_scratch"))
    if checkpoint is not None and from_scratch:
        raise ev.EvaluationError("--from-scratch trains random encoders: do not give --checkpoint with it")
    if checkpoint is None and not from_scratch:
        raise ev.EvaluationError("give --checkpoint (a pretrain, distill or finetune checkpoint) or --from-scratch")
    cfg = load_config(config, overrides, base["config"] if base else None)
    ck, names, source_model = encoder_source(cfg, store, checkpoint, modalities)
    pretrained = None if ck is None else ev.load_encoders(ck, names)  # strict: each key present, no other
    plain, model = config_to_dict(cfg), dict(source_model)  # one edit of the sections, validated once
    if cfg.finetune.dropout is not None:  # a training setting: the run's model section records what was used
        model["dropout"] = cfg.finetune.dropout
    umurl = ev.is_umurl(model)
    if umurl:  # the umurl section travels beside the model section
        plain["umurl"] = model.pop("umurl")
    plain["model"] = model
    for key in ("epochs", "milestones"):  # the loop, its checkpoints and resume read the optim section
        if plain["finetune"][key] is not None:
            plain["optim"][key] = plain["finetune"][key]
    cfg = config_from_dict(plain)
    plain = config_to_dict(cfg)
    model_cfg = {**plain["model"], "umurl": plain["umurl"]} if umurl else plain["model"]
    store_params = ev.check_store_agrees(store, model_cfg, None if ck is None else ck.get("store_params"))
    with reading_store(store, base, run_dir) as watch, job_processes(cfg, log) as (env, log):
        train_ds = train_split(store, benchmark, cfg, env, views=1)
        fraction = cfg.finetune.label_fraction
        if fraction is not None:
            subset = label_subset(train_ds.labels, fraction, cfg.data.seed)
            train_ds = train_split(store, benchmark, cfg, env, views=1, positions=subset)
        inputs = ("joint",) if umurl else names  # the store arrays the encoders read
        val_ds = ModalityDataset(store, benchmark, "val", inputs)
        num_class = count_classes(cfg, train_ds.labels, val_ds.labels)
        if len(train_ds) < cfg.data.batch_size:
            raise ev.EvaluationError(f"{len(train_ds)} labelled train samples are fewer than one batch of "
                                     f"{cfg.data.batch_size}; lower data.batch_size")
        with run_folder(run_dir, resume, log) as run:
            labelled = run / "labelled_train_indices.npy"
            if fraction is not None and env.is_main:
                if resume and labelled.is_file() and not np.array_equal(np.load(labelled), train_ds.indices):
                    raise ev.EvaluationError(f"{labelled} differs from the subset this config draws; "
                                             "resume with the same seed")
                np.save(labelled, train_ds.indices)

            torch.manual_seed(cfg.data.seed)
            if umurl:
                from ikem_train.methods.umurl import UmURLFinetuneModel
                from ikem_train.nets.umurl import backbone_kwargs

                model = UmURLFinetuneModel(backbone_kwargs(model_cfg, model_cfg["umurl"]), names, num_class)
                if pretrained is not None:
                    model.backbone.load_state_dict(next(iter(pretrained.values())).backbone.state_dict(), strict=True)
                backbones = torch.nn.ModuleDict({"backbone": model.backbone})
            else:
                streams = torch.nn.ModuleDict({m: Encoder(num_class, mlp=False, **stgcn_kwargs(model_cfg))
                                               for m in names})
                if pretrained is not None:
                    for m in names:
                        streams[m].backbone.load_state_dict(pretrained[m].state_dict(), strict=True)
                model = FinetuneModel(streams, model_cfg["bone_pairs"], model_cfg["true_timeline"], model_cfg["layout"])
                backbones = torch.nn.ModuleDict({m: streams[m].backbone for m in names})
            start = ev.parameter_snapshot(backbones)
            device = env.device or resolve_device(cfg.run.device)
            latest = {}

            @torch.no_grad()
            def evaluate(epoch, model):
                if epoch % cfg.finetune.eval_interval and epoch != cfg.optim.epochs:
                    return {}
                model.eval()
                per = []
                for x, _, _ in ev.eval_batches(val_ds, cfg.data.eval_batch_size, device, cfg.data.num_workers):
                    per.append(model.logits({m: x[:, inputs.index("joint" if umurl else m)] for m in names})
                               .float().cpu())
                per = torch.cat(per, dim=1)  # (K, n_val, C)
                if not bool(torch.isfinite(per).all()):
                    raise ev.EvaluationError(f"fine-tuning diverged by epoch {epoch} (non-finite val logits); "
                                             f"lower optim.lr (now {cfg.optim.lr:g})")
                latest["logits"] = per
                fused = per.mean(0)
                y = torch.from_numpy(val_ds.labels)
                rec = {"val/top1": ev.topk_accuracy(fused, y, 1), "val/top5": ev.topk_accuracy(fused, y, 5),
                       **{f"val/top1/{m}": ev.topk_accuracy(per[k], y, 1) for k, m in enumerate(names)}}
                log(f"finetune epoch {epoch}: val top-1 {100 * rec['val/top1']:.2f} %, "
                    f"top-5 {100 * rec['val/top5']:.2f} %")
                return rec

            what = "from scratch (random encoders)" if from_scratch else f"from {checkpoint}"
            share = f"{len(train_ds)} labelled train samples" + (f" ({fraction:g} per class)" if fraction else "")
            log(f"fine-tuning {', '.join(names)} {what} on {benchmark}, {share}, for {cfg.optim.epochs} epochs "
                f"into {run}" + on_processes(env))
            train(model, train_ds, cfg, run, kind="finetune", modalities=names, resume=resume, epoch_end=evaluate,
                  log=log, extra={"checkpoint": None if checkpoint is None else str(checkpoint),
                                  "from_scratch": bool(from_scratch), "store": str(store), "benchmark": benchmark,
                                  "store_params": store_params, "store_fingerprint": watch.fingerprint})
            if not env.is_main:  # rank 0 evaluated the val split and writes the results
                return None
            if "logits" not in latest:  # a resumed run that had nothing left to train
                model.load_state_dict(load_checkpoint(run / "last.pt")["model"])
                evaluate(cfg.optim.epochs, model.to(device))
            records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            evaluated = [r for r in records if "val/top1" in r]
            final, best = evaluated[-1], max(evaluated, key=lambda r: r["val/top1"])

            def keep(record):  # {"epoch", "top1", "top5", "top1/<m>"} from a metrics record's val/ entries
                return {"epoch": record["epoch"], **{k[4:]: v for k, v in record.items() if k.startswith("val/")}}

            fused = latest["logits"].mean(0)
            changed = bool(ev.changed_parameters(start, backbones))
            results = {
                "job": "finetune", "checkpoint": None if checkpoint is None else str(checkpoint),
                "from_scratch": bool(from_scratch), "store": str(store), "benchmark": benchmark,
                "modalities": list(names),
                "fused": len(names) > 1, "num_class": num_class, "graph_partition": model_cfg.get("graph_partition"),
                "store_params": store_params, "store_fingerprint": watch.fingerprint, "label_fraction": fraction, "train_samples": len(train_ds),
                "val_samples": len(val_ds), "run": str(run),
                "final": keep(final), "best_on_val": {"note": BEST_LABEL, **keep(best)},
                "per_modality_top1": {m: final[f"val/top1/{m}"] for m in names},
                **ev.class_report(fused.argmax(1), torch.from_numpy(val_ds.labels), train_ds.labels, num_class),
                "encoder_changed": changed,
            }
            watch.verify()  # the numbers above all come from the store as it was at the start
            write_json(run / "results.json", results)
            return results
