"""The pretraining model (MoCo / CrosSCLR / IKEM, METHOD.md §6) and the distillation
model (METHOD.md §7), both driven by a list of modality names.

One modality gives SkeletonCLR (plain MoCo); ``joint, motion, bone`` with
``bone_pairs="crossclr"`` gives the three-stream CrosSCLR baseline; the six modalities
give IKEM's teacher. Every per-modality part is a ModuleDict keyed by modality name.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ikem_data.layouts import get_layout
from ikem_data.names import MODALITIES, STUDENT_MODALITIES, resolve_modalities
from ikem_train.config import check_stacked_encoders
from ikem_train.training import distributed
from ikem_train.methods.crossclr import cross_modal_losses
from ikem_train.methods.distill import distill_loss
from ikem_train.nets.graph import GRAPH_PARTITIONS
from ikem_train.methods.ikem import IKEMHead, concat_keys, concat_queues, ikem_loss
from ikem_train.data.device_modalities import compute_modalities
from ikem_train.methods.moco import check_queue_size, enqueue, info_nce, momentum_update, no_autocast, random_queue
from ikem_train.nets.stacked import stacked_forward
from ikem_train.nets.stgcn import STGCN, init_weights, stgcn_kwargs


class Encoder(nn.Module):
    """ST-GCN backbone plus projection head (METHOD.md §5).

    ``head`` is ``Linear(hidden_dim, hidden_dim) → ReLU → Linear(hidden_dim, out_dim)``
    when ``mlp`` (pretraining), ``Linear(hidden_dim, out_dim)`` otherwise; students use
    ``hidden=out_dim=768``. ``forward(x)`` returns ``(head(h), h)``.
    """

    def __init__(self, out_dim, *, in_channels=3, hidden_channels=16, hidden_dim=256,
                 dropout=0.5, mlp=True, head_hidden=None, graph_partition=GRAPH_PARTITIONS[0], layout=None):
        super().__init__()
        self.backbone = STGCN(in_channels, hidden_channels, hidden_dim, dropout, graph_partition=graph_partition,
                              layout=layout)
        if mlp:
            mid = head_hidden or hidden_dim
            self.head = nn.Sequential(nn.Linear(hidden_dim, mid), nn.ReLU(inplace=True),
                                      nn.Linear(mid, out_dim))
        else:
            self.head = nn.Linear(hidden_dim, out_dim)
        init_weights(self.head)

    def forward(self, x):
        h = self.backbone(x)
        return self.head(h), h


def run_encoders(encoders, inputs, stacked):
    """``[encoders[g](inputs[g]) for g]``, as one batched pass where that pays (issue 20).

    Args:
        encoders: :class:`Encoder` modules of one shape; inputs: matching (N, C, T, V, M).
        stacked: True: through :func:`ikem_train.nets.stacked.stacked_forward` (one grouped
            convolution per layer); False: one after another, as the reference; ``"auto"``:
            stacked on CUDA (a launch per layer instead of one per encoder and layer), one
            by one on a CPU, where grouped convolutions and the concatenations measured slower
            (bench/bench_train.py --sections stacked). Same results either way (to float
            rounding; dropout masks are drawn in another order).

    Returns:
        list of ``(z, h)`` pairs, ``z`` (N, out_dim), ``h`` (N, hidden_dim).
    """
    if stacked == "auto":
        stacked = inputs[0].device.type == "cuda"
    if stacked and len(encoders) > 1:
        return stacked_forward(encoders, inputs)
    return [encoder(x) for encoder, x in zip(encoders, inputs)]


def _check_sizes(queue_size, topk):
    if queue_size <= 0 or topk < 1 or topk > queue_size:
        raise ValueError(f"need 1 <= topk <= queue_size, got topk={topk}, queue_size={queue_size}")


def _check_phase_keys(frozen):
    unknown = [m for m in frozen if m not in MODALITIES]
    if unknown:
        raise ValueError(f"cross_phase_frozen_keys: unknown modalities {unknown}; valid: {', '.join(MODALITIES)}")


def _mirror_pointer(module, incompatible_keys):
    module._ptr = int(module.queue_ptr)  # a loaded state dict moved the pointer: follow it (once, at load)


class QueueModel(nn.Module):
    """Base of the models that own MoCo queues: one write pointer shared by all of them.

    The pointer is the (1,) long buffer ``queue_ptr`` (so it is in the state dict) and a
    Python int mirror of it (``_ptr``, restored whenever a state dict is loaded), which is
    the one read: a training step never waits for the device to learn where to write.
    Under torchrun the keys of every rank are gathered before they are written, so each
    rank's queues are those of one process with the global batch.
    """

    queue_size: int

    def _register_pointer(self):
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self._ptr = 0
        self.register_load_state_dict_post_hook(_mirror_pointer)

    def _check_batch(self, batch):
        """Raise ValueError unless K is a multiple of the global batch (this rank's × world size)."""
        check_queue_size(self.queue_size, batch * distributed.world_size())

    # Eager: under torch.compile the copies are inputs of the compiled graph, which could
    # otherwise drop a clone of a buffer and let backward read the buffer the enqueue wrote.
    @torch.compiler.disable
    @torch.no_grad()
    def _snapshot(self, queues):
        """Copies of ``queues`` (D_i, K) for this step's loss: :meth:`_enqueue` writes the
        buffers in place before backward reads them."""
        return [queue.clone() for queue in queues]

    # Eager always: slicing at a host int inside a compiled graph would be specialised on
    # its value (a recompile per pointer position); here it costs one graph break.
    @torch.compiler.disable
    @torch.no_grad()
    def _enqueue(self, queues, keys):
        """Write every rank's ``keys`` into ``queues`` at the pointer, then advance it.

        Args:
            queues: (D_i, K) buffers. keys: matching (B, D_i) tensors of this rank, all
                gathered in one collective, in rank order.
        """
        gathered = distributed.all_gather_cat(torch.cat([k.float() for k in keys], dim=1))  # (world·B, ΣD_i)
        start = self._ptr
        for queue, part in zip(queues, gathered.split([q.shape[0] for q in queues], dim=1)):
            enqueue(queue, part, start)
        self._ptr = (start + gathered.shape[0]) % self.queue_size
        self.queue_ptr.fill_(self._ptr)  # a scalar write: the device is never read


class PretrainModel(QueueModel):
    """Multi-modality MoCo with CrosSCLR cross-modal mining and the IKEM term (METHOD.md §6).

    Args:
        modalities: names (or a spec accepted by ``resolve_modalities``).
        in_channels, hidden_channels, hidden_dim, dropout: the ST-GCN (METHOD.md §5).
        feature_dim: embedding size D (128); mlp: 2-layer head.
        queue_size: K (32768); must be a multiple of the batch size.
        momentum: m (0.999); temperature: T (0.07).
        cross_epoch: last epoch (1-based) of phase 1 (150).
        topk, context: CrosSCLR mining (1, True).
        ikem: add the IKEM concatenated-key term in phase 2.
        cross_phase_frozen_keys: key encoders not momentum-updated in phase 2 (reference:
            joint, bone, rotation_axis; ``()`` updates all).
        method: ``"ikem"`` only (the ``model.method`` config key; ValueError otherwise).
        key_init: ``"copy"`` (key = exact copy of query, standard MoCo) or ``"reinit"``
            (independent random init, the reference).
        bone_pairs, true_timeline: forwarded to :func:`compute_modalities`.
        graph_partition: the ST-GCN graph, ``"reference"`` (truncated at one hop, the
            reference's) or ``"full"`` (METHOD.md §5, §11 item 20).
        layout: skeleton layout name (:mod:`ikem_data.layouts`; None: Kinect v2): the
            joints of the modalities and of the graph.
        stacked_encoders: run the query encoders (and the key encoders) of all modalities
            as one batched pass (True), one after another as the reference does (False), or
            ``"auto"`` (stacked on CUDA only; see :func:`run_encoders`). The parameters and
            the state dict are the same either way.

    State dict: ``query.<m>.backbone.*``, ``query.<m>.head.*``, ``key.<m>.*``,
    ``ikem_head.<m>.*``, buffers ``queue_<m>`` (D, K) and ``queue_ptr`` (1,).
    """

    #: Batch entries the training loop passes to ``forward`` (besides ``epoch``).
    inputs = ("view1", "view2", "frames")

    def __init__(self, modalities, *, in_channels=3, hidden_channels=16, hidden_dim=256, dropout=0.5,
                 feature_dim=128, mlp=True, queue_size=32768, momentum=0.999, temperature=0.07,
                 cross_epoch=150, topk=1, context=True, ikem=True,
                 cross_phase_frozen_keys=("joint", "bone", "rotation_axis"), key_init="copy",
                 bone_pairs="ikem", true_timeline=True, graph_partition=GRAPH_PARTITIONS[0], layout=None,
                 stacked_encoders="auto", method="ikem"):
        super().__init__()
        if method != "ikem":  # model.method: umurl builds ikem_train.methods.umurl.UmURLModel instead
            raise ValueError(f"PretrainModel is the IKEM family (method 'ikem'), not {method!r}; "
                             "UmURL is ikem_train.methods.umurl.UmURLModel")
        self.modalities = resolve_modalities(modalities)
        self.stacked_encoders = check_stacked_encoders(stacked_encoders)
        self.layout = get_layout(layout)
        if key_init not in ("copy", "reinit"):
            raise ValueError(f"key_init must be 'copy' or 'reinit', not {key_init!r}")
        _check_phase_keys(cross_phase_frozen_keys)
        _check_sizes(queue_size, topk)
        self.layout.bones(bone_pairs)  # raises for a bone set the layout lacks
        self.queue_size, self.momentum, self.temperature = int(queue_size), float(momentum), float(temperature)
        self.cross_epoch, self.topk, self.context = int(cross_epoch), int(topk), bool(context)
        self.use_ikem = bool(ikem) and len(self.modalities) > 1
        self.frozen_keys = tuple(m for m in cross_phase_frozen_keys if m in self.modalities)
        self.bone_pairs, self.true_timeline = bone_pairs, bool(true_timeline)

        def encoder():
            return Encoder(feature_dim, in_channels=in_channels, hidden_channels=hidden_channels,
                           hidden_dim=hidden_dim, dropout=dropout, mlp=mlp, graph_partition=graph_partition,
                           layout=self.layout.name)

        self.query = nn.ModuleDict({m: encoder() for m in self.modalities})
        self.key = nn.ModuleDict({m: copy.deepcopy(self.query[m]) if key_init == "copy" else encoder()
                                  for m in self.modalities})
        for p in self.key.parameters():
            p.requires_grad_(False)
        if self.use_ikem:
            joint_dim = feature_dim * len(self.modalities)
            self.ikem_head = nn.ModuleDict({m: init_weights(IKEMHead(hidden_dim, joint_dim))
                                            for m in self.modalities})
        for m in self.modalities:
            self.register_buffer(f"queue_{m}", random_queue(feature_dim, self.queue_size))
        self._register_pointer()  # shared by all queues

    def queue(self, m):
        """The (D, K) queue buffer of modality ``m``."""
        return getattr(self, f"queue_{m}")

    def is_cross_phase(self, epoch):
        """True in phase 2: epoch (1-based) > cross_epoch and more than one modality."""
        return len(self.modalities) > 1 and epoch > self.cross_epoch

    def skips_parameters(self, epoch) -> bool:
        """Whether a step of ``epoch`` leaves parameters without a gradient: the IKEM heads
        in phase 1 (DDP must then look for them; see :func:`ikem_train.training.distributed.wrap`)."""
        return self.use_ikem and not self.is_cross_phase(epoch)

    def phase(self, epoch) -> str:
        """What the loss of ``epoch`` sums, for the training log."""
        if not self.is_cross_phase(epoch):
            return "phase 1: one InfoNCE per modality (nce/*)"
        parts = "cross/* + ikem/*" if self.use_ikem else "cross/*"
        return f"phase 2 (after epoch {self.cross_epoch}): CrosSCLR mining + IKEM, {parts}"

    def forward(self, view1, view2, frames, epoch):
        """One training step's loss; updates key encoders and queues in place.

        Args:
            view1, view2: (N, 3, T, 25, M) float32 augmented joint sequences (query, key).
            frames: (N,) header frame counts.
            epoch: 1-based epoch.

        Returns:
            dict: ``"loss"`` (scalar with grad) and detached parts ``"loss/nce/<m>"``
            (phase 1) or ``"loss/cross/<m>"``, ``"loss/ikem/<m>"`` (phase 2).

        Raises:
            ValueError: queue_size % global batch != 0.
        """
        self._check_batch(view1.shape[0])
        cross = self.is_cross_phase(epoch)
        queues = dict(zip(self.modalities, self._snapshot([self.queue(m) for m in self.modalities])))
        x1 = compute_modalities(view1, frames, self.modalities, self.bone_pairs, self.true_timeline, self.layout)
        x2 = compute_modalities(view2, frames, self.modalities, self.bone_pairs, self.true_timeline, self.layout)

        ms = self.modalities
        outputs = run_encoders([self.query[m] for m in ms], [x1[m] for m in ms], self.stacked_encoders)
        q = {m: F.normalize(z.float(), dim=1) for m, (z, _) in zip(ms, outputs)}
        h = {m: feature for m, (_, feature) in zip(ms, outputs)}
        with torch.no_grad():
            updated = [m for m in ms if not (cross and m in self.frozen_keys)]
            momentum_update([self.key[m] for m in updated], [self.query[m] for m in updated],
                            self.momentum)  # before the key pass
            keys = run_encoders([self.key[m] for m in ms], [x2[m] for m in ms], self.stacked_encoders)
            k = {m: F.normalize(z.float(), dim=1) for m, (z, _) in zip(ms, keys)}

        out = {}
        if not cross:
            for m in self.modalities:
                out[f"loss/nce/{m}"] = info_nce(q[m], k[m], queues[m], self.temperature)
        else:
            for m, loss in cross_modal_losses(q, k, queues, self.temperature, self.topk, self.context).items():
                out[f"loss/cross/{m}"] = loss
            if self.use_ikem:
                kappa = concat_keys([k[m] for m in self.modalities])  # order j, m, b, a, r, o
                joint_queue = concat_queues([queues[m] for m in self.modalities])
                for m in self.modalities:
                    out[f"loss/ikem/{m}"] = ikem_loss(self.ikem_head[m](h[m]), kappa, joint_queue,
                                                      self.temperature)
        loss = torch.stack(list(out.values())).sum()

        self._enqueue([self.queue(m) for m in self.modalities], [k[m] for m in self.modalities])
        result = {"loss": loss}
        result.update({name: value.detach() for name, value in out.items()})
        return result


class DistillModel(QueueModel):
    """Six-modality teacher distilled into fresh students (METHOD.md §7).

    Args:
        teacher_state: the ``"model"`` state dict of a six-modality PretrainModel checkpoint.
        teacher_config: the PretrainModel kwargs it was built with (incl. ``"modalities"``);
            the students' encoders take the teacher's widths and ``graph_partition``.
        student_modalities: streams to train (joint, motion, bone).
        teacher_mode: ``"train"`` (reference: dropout and BN batch statistics active) or
            ``"eval"``.
        omega_queue: queue ranking angular velocity's neighbours: ``"bone"`` (reference
            defect, ``q_o·Q_b``) or ``"angular_velocity"`` (fixed, ``q_o·Q_o``).
        student_dim: student head width (768 = feature_dim × 6).
        queue_size, temperature, topk, context: as PretrainModel.
        stacked_encoders: run the six teacher encoders (and the students) as one batched
            pass each: True, False or ``"auto"``, as PretrainModel's switch.

    State dict: ``student.<m>.backbone.*``, ``student.<m>.head.*``, ``teacher.<m>.*``,
    buffers ``queue_<m>`` (D, K) per teacher modality, ``queue_teacher`` (6·D, K),
    ``queue_ptr`` (1,).

    Raises:
        ValueError: the teacher is not a six-modality PretrainModel, or its state dict
            does not match its config (missing/unexpected keys, shapes), or a bad switch.
    """

    inputs = ("view1", "view2", "frames")  # as PretrainModel

    def __init__(self, teacher_state, teacher_config, *, student_modalities=STUDENT_MODALITIES,
                 teacher_mode="train", omega_queue="bone", student_dim=768, queue_size=32768,
                 temperature=0.07, topk=1, context=True, stacked_encoders="auto"):
        super().__init__()
        teacher_config = dict(teacher_config)
        self.stacked_encoders = check_stacked_encoders(stacked_encoders)
        if teacher_mode not in ("train", "eval"):
            raise ValueError(f"teacher_mode must be 'train' or 'eval', not {teacher_mode!r}")
        if omega_queue not in ("bone", "angular_velocity", "omega"):
            raise ValueError(f"omega_queue must be 'bone' or 'angular_velocity', not {omega_queue!r}")
        given = teacher_config.get("modalities")
        try:
            teacher_modalities = resolve_modalities(given) if given is not None else ()
        except ValueError as err:
            raise ValueError(f"teacher config: {err}") from None
        if set(teacher_modalities) != set(MODALITIES):
            raise ValueError(f"the teacher must be a six-modality PretrainModel ({', '.join(MODALITIES)}); "
                             f"its config has modalities {list(teacher_modalities)}")
        _check_sizes(queue_size, topk)
        self.teacher_modalities = MODALITIES  # the reference order j, m, b, a, r, o
        self.student_modalities = resolve_modalities(student_modalities)
        self.teacher_mode = teacher_mode
        self.omega_queue = "angular_velocity" if omega_queue == "omega" else omega_queue
        self.queue_size, self.temperature = int(queue_size), float(temperature)
        self.topk, self.context = int(topk), bool(context)
        self.bone_pairs = teacher_config.get("bone_pairs", "ikem")
        self.layout = get_layout(teacher_config.get("layout"))
        self.true_timeline = bool(teacher_config.get("true_timeline", True))
        feature_dim = int(teacher_config.get("feature_dim", 128))
        enc = dict(stgcn_kwargs(teacher_config), mlp=teacher_config.get("mlp", True))  # Encoder defaults the rest

        self.teacher = nn.ModuleDict({m: Encoder(feature_dim, **enc) for m in self.teacher_modalities})
        self._load_teacher(teacher_state)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        enc_student = dict(enc, mlp=True)
        self.student = nn.ModuleDict({m: Encoder(student_dim, head_hidden=student_dim, **enc_student)
                                      for m in self.student_modalities})
        teacher_dim = feature_dim * len(self.teacher_modalities)
        if student_dim != teacher_dim:
            raise ValueError(f"student_dim {student_dim} must equal the teacher's concatenated width "
                             f"{teacher_dim} (feature_dim {feature_dim} x 6)")
        for m in self.teacher_modalities:
            self.register_buffer(f"queue_{m}", random_queue(feature_dim, self.queue_size))
        self.register_buffer("queue_teacher", random_queue(teacher_dim, self.queue_size))
        self._register_pointer()
        self.train()

    def _load_teacher(self, teacher_state):
        prefix = "query."
        if not any(key.startswith(prefix) for key in teacher_state):
            kinds = sorted({key.split(".")[0] for key in teacher_state})
            raise ValueError(f"the teacher state dict has no 'query.*' encoders (it has: {', '.join(kinds)}); "
                             f"is it a PretrainModel checkpoint? (a student checkpoint cannot be a teacher)")
        given = {key[len(prefix):]: value for key, value in teacher_state.items()
                 if key.startswith(prefix) and key.split(".")[1] in self.teacher_modalities}
        expected = self.teacher.state_dict()
        missing = sorted(set(expected) - set(given))
        unexpected = sorted(set(given) - set(expected))
        shapes = sorted(f"{key}: checkpoint {tuple(given[key].shape)} vs config {tuple(expected[key].shape)}"
                        for key in set(given) & set(expected) if given[key].shape != expected[key].shape)
        if missing or unexpected or shapes:
            parts = []
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
                if items:
                    shown = ", ".join(f"query.{item}" for item in items[:8])
                    parts.append(f"{label} ({len(items)}): {shown}{' ...' if len(items) > 8 else ''}")
            raise ValueError("the teacher checkpoint does not match its config: " + "; ".join(parts))
        self.teacher.load_state_dict(given, strict=True)

    def train(self, mode=True):
        """Set train/eval mode; the teacher follows ``teacher_mode`` while training."""
        super().train(mode)
        self.teacher.train(mode and self.teacher_mode == "train")
        return self

    def forward(self, view1, view2, frames, epoch):
        """One distillation step: the teacher sees view 1, the students view 2.

        Args:
            view1, view2: (N, 3, T, 25, M) float32 augmented joint sequences.
            frames: (N,) header frame counts.
            epoch: 1-based epoch (unused; the loss does not change over epochs).

        Returns:
            dict: ``"loss"`` (scalar with grad) and detached ``"loss/distill/<m>"``.

        Raises:
            ValueError: queue_size % global batch != 0.
        """
        self._check_batch(view1.shape[0])
        teacher_queue, = self._snapshot([self.queue_teacher])
        x1 = compute_modalities(view1, frames, self.teacher_modalities, self.bone_pairs, self.true_timeline,
                                self.layout)
        x2 = compute_modalities(view2, frames, self.student_modalities, self.bone_pairs, self.true_timeline,
                                self.layout)
        tms, sms = self.teacher_modalities, self.student_modalities
        with torch.no_grad():
            outputs = run_encoders([self.teacher[m] for m in tms], [x1[m] for m in tms], self.stacked_encoders)
            qt = {m: F.normalize(z.float(), dim=1) for m, (z, _) in zip(tms, outputs)}
            t = concat_keys([qt[m] for m in self.teacher_modalities])  # (B, 6·D)
            sigmas = []
            for m in self.teacher_modalities:
                ranked_by = self.omega_queue if m == "angular_velocity" else m
                with no_autocast(qt[m]):
                    sigmas.append(qt[m] @ getattr(self, f"queue_{ranked_by}").float())  # (B, K)
        out = {}
        students = run_encoders([self.student[s] for s in sms], [x2[s] for s in sms], self.stacked_encoders)
        for s, (z, _) in zip(sms, students):
            z = F.normalize(z.float(), dim=1)
            out[f"loss/distill/{s}"] = distill_loss(z, t, teacher_queue, sigmas, self.temperature,
                                                    self.topk, self.context)
        loss = torch.stack(list(out.values())).sum()
        queues = [getattr(self, f"queue_{m}") for m in self.teacher_modalities] + [self.queue_teacher]
        self._enqueue(queues, [qt[m] for m in self.teacher_modalities] + [t])
        result = {"loss": loss}
        result.update({name: value.detach() for name, value in out.items()})
        return result


def encoder_state_dicts(model_state, modalities):
    """The STGCN state dict of each requested modality of a PretrainModel, DistillModel or FinetuneModel.

    Args:
        model_state: a PretrainModel (``query.<m>.backbone.*``), DistillModel
            (``student.<m>.backbone.*``) or FinetuneModel (``streams.<m>.backbone.*``) state dict.
        modalities: names (or a spec accepted by ``resolve_modalities``).

    Returns:
        dict modality -> STGCN state dict (prefix stripped).

    Raises:
        KeyError: a requested modality has no encoder; the message lists those present.
    """
    available = {}
    for key in model_state:
        parts = key.split(".")
        if len(parts) > 3 and parts[0] in ("query", "student", "streams") and parts[2] == "backbone":
            available.setdefault(parts[1], parts[0])
    out = {}
    for m in resolve_modalities(modalities):
        if m not in available:
            raise KeyError(f"the checkpoint has no encoder for modality {m!r}; it has: "
                           f"{', '.join(sorted(available, key=MODALITIES.index)) or 'none'}")
        prefix = f"{available[m]}.{m}.backbone."
        out[m] = {key[len(prefix):]: value for key, value in model_state.items() if key.startswith(prefix)}
    return out
