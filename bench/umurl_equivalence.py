"""Compare ikem's UmURL with the original code, in float64, on identical weights and inputs.

What it needs (CI cannot fetch it, so this is a script, not a test):

- a checkout of the original code: ``git clone https://github.com/HuiGuanLab/UmURL``
  (read at commit 744278b); its ``umurl.py`` (the network) and ``pretrain.py`` (the loss) are
  imported from that folder. Only torch is needed: ``pretrain.py``'s other imports
  (tensorboard, its datasets) are not executed; its ``off_diagonal`` and ``vc_reg`` are taken
  from its source, and its loss lines (``5 * (intra + inter) + reg`` with ``nn.MSELoss``) are
  restated below exactly as ``pretrain.py::train`` writes them.
- ikem installed (``pip install -e .``).

Usage::

    python bench/umurl_equivalence.py --umurl-repo path/to/UmURL [--hidden-size 1024] [--batch 6]

It builds the original ``UmURL`` and ikem's :class:`ikem_train.methods.umurl.UmURLModel` with the
paper's sizes (64 frames, 25 joints, 2 persons; h = 1024, 1 head, 1 layer, projectors 4096),
copies the original's weights into ikem's by name, draws four random views and compares:
the temporal and spatial tokens of joint / bone / motion, their embeddings, the encoder
outputs (uni-modal ``y_j, y_b, y_m`` and fused ``y_u``), the six projections, the loss and
the gradient of every parameter. It prints the largest difference of each and exits with 1
when one exceeds ``--tol`` (1e-10 relative to the largest magnitude of the original's
tensor; for gradients, of the original's whole gradient).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import torch
from torch import nn

MODALITIES = ("joint", "bone", "motion")
SHORT = {"joint": "j", "bone": "b", "motion": "m"}


def original_modules(repo: Path):
    """The original ``umurl`` module and a namespace with ``pretrain.py``'s ``off_diagonal`` and ``vc_reg``."""
    if not (repo / "umurl.py").is_file() or not (repo / "pretrain.py").is_file():
        sys.exit(f"{repo} is not a checkout of HuiGuanLab/UmURL (umurl.py and pretrain.py expected); "
                 "git clone https://github.com/HuiGuanLab/UmURL")
    sys.path.insert(0, str(repo))
    import umurl  # the original network

    tree = ast.parse((repo / "pretrain.py").read_text())
    wanted = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in ("off_diagonal", "vc_reg")]
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(repo / "pretrain.py"), "exec"), namespace)
    return umurl, namespace


def original_loss(z, vc_reg):
    """The loss lines of the original ``pretrain.py::train`` (one process: no gather)."""
    z_j, z_b, z_m, z_uj, z_ub, z_um = z
    criterion = nn.MSELoss()
    intra = criterion(z_j, z_uj) + criterion(z_b, z_ub) + criterion(z_m, z_um)
    center = (z_j + z_b + z_m) / 3
    inter = criterion(z_j, center) + criterion(z_b, center) + criterion(z_m, center)
    reg = vc_reg(z_j) + vc_reg(z_b) + vc_reg(z_m) + vc_reg(z_uj) + vc_reg(z_ub) + vc_reg(z_um)
    return 5 * (intra + inter) + reg


def ikem_name(name: str) -> str | None:
    """ikem's state-dict name of an original one (None: the original's positional table)."""
    parts = name.split(".")
    if parts[0] in ("j_projector", "b_projector", "m_projector"):
        modality = {"j": "joint", "b": "bone", "m": "motion"}[parts[0][0]]
        return ".".join(["projector", modality] + parts[1:])
    assert parts[0] == "backbone", name
    head = parts[1]
    if head in ("j_emb", "b_emb", "m_emb"):
        modality = {"j": "joint", "b": "bone", "m": "motion"}[head[0]]
        stream = {"t_embedding": "temporal", "s_embedding": "spatial"}[parts[2]]
        return ".".join(["backbone", "embed", modality, stream] + parts[3:])
    if head == "mm_fusion":
        return {"t_fusion": "backbone.fuse_temporal", "s_fusion": "backbone.fuse_spatial"}[parts[2]] + "." + parts[-1]
    if head == "ma_encoder":
        if parts[2] == "pe":
            return None
        stream = {"t_tr": "temporal", "s_tr": "spatial"}[parts[2]]
        return ".".join(["backbone", "encoder", stream] + parts[3:])
    raise KeyError(name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--umurl-repo", type=Path, required=True, help="checkout of HuiGuanLab/UmURL")
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--projector-dim", type=int, default=4096, help="the original hard-codes 4096")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--persons", type=int, default=2)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-10, help="largest relative difference accepted")
    args = parser.parse_args(argv)

    from ikem_train.methods.umurl import UmURLModel, umurl_losses
    from ikem_train.nets.umurl import modality, tokens

    umurl, original_ns = original_modules(args.umurl_repo)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(args.seed)
    v, c, t, m = 25, 3, args.frames, args.persons
    theirs = umurl.UmURL(m * v * c, t * c, args.hidden_size, args.heads, args.layers).train()
    if args.projector_dim != theirs.j_projector[-1].out_features:
        sys.exit(f"the original's projectors give {theirs.j_projector[-1].out_features} dimensions; "
                 f"use --projector-dim {theirs.j_projector[-1].out_features}")
    ours = UmURLModel({"frames": t, "persons": m, "hidden_size": args.hidden_size, "num_heads": args.heads,
                       "num_layers": args.layers}, projector_dim=args.projector_dim).train()
    mapping = {}
    for name in theirs.state_dict():
        target = ikem_name(name)
        if target is not None:
            mapping[name] = target
    state = ours.state_dict()
    missing = sorted(set(state) - set(mapping.values()))
    if missing:
        sys.exit(f"ikem parameters without an original counterpart: {missing}")
    ours.load_state_dict({mapping[k]: val for k, val in theirs.state_dict().items() if k in mapping}, strict=True)

    g = torch.Generator().manual_seed(args.seed)
    views = [torch.randn(args.batch, c, t, v, m, generator=g) * 0.3 for _ in range(4)]
    views[3][:, :, :, :, 1] = 0  # a sample with one person, as most of NTU: the second slot all zero
    results = []

    def compare(what, a, b, scale=None):
        a, b = a.detach(), b.detach()
        scale = max(float(b.abs().max()) if scale is None else scale, 1e-300)
        diff = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
        results.append((what, diff / scale, diff, tuple(b.shape)))

    # tokens and their embeddings
    for name in MODALITIES:
        xt, xs = theirs.modality_generation(views[0], name)
        ot, os_ = tokens(modality(views[0], name))
        compare(f"{name} temporal tokens", ot, xt)
        compare(f"{name} spatial tokens", os_, xs)
        et, es = getattr(theirs.backbone, f"{SHORT[name]}_emb")(xt, xs)
        ft, fs = ours.backbone.embed[name](ot, os_)
        compare(f"{name} temporal embedding", ft, et)
        compare(f"{name} spatial embedding", fs, es)
    compare("positional table", ours.backbone.encoder.positions, theirs.backbone.ma_encoder.pe.pe)

    # encoder outputs
    gen = [theirs.modality_generation(views[k], name) for k, name in enumerate(MODALITIES)]
    y = theirs.backbone.uni_forward(*gen[0], *gen[1], *gen[2])
    for k, name in enumerate(MODALITIES):
        compare(f"encoder output y_{SHORT[name]}", ours.backbone.single(views[k], name), y[k])
    four = [theirs.modality_generation(views[3], name) for name in MODALITIES]
    compare("encoder output y_u (fused)", ours.backbone.fused(views[3]), theirs.backbone.mm_forward(*four[0], *four[1], *four[2]))

    # projections, loss, gradients (train mode: BatchNorm on batch statistics)
    z_theirs = theirs(*views)
    z, z_fused = ours.projections(*views)
    mine = [z[n] for n in MODALITIES] + [z_fused[n] for n in MODALITIES]
    for label, a, b in zip(("z_j", "z_b", "z_m", "z_uj", "z_ub", "z_um"), mine, z_theirs):
        compare(f"projection {label}", a, b)
    loss_theirs = original_loss(z_theirs, original_ns["vc_reg"])
    loss_ours = umurl_losses(z, z_fused)["loss"]
    compare("loss", loss_ours, loss_theirs)
    theirs.zero_grad()
    ours.zero_grad()
    loss_theirs.backward()
    loss_ours.backward()
    ours_params = dict(ours.named_parameters())
    # gradients relative to the largest gradient entry of the model: the biases before a
    # BatchNorm have a zero gradient in exact arithmetic (1e-14 of rounding on both sides)
    grad_scale = max(float(p.grad.abs().max()) for p in theirs.parameters())
    worst = ("", 0.0, 0.0, ())
    for name, p in theirs.named_parameters():
        mine_p = ours_params[mapping[name]]
        before = len(results)
        compare(f"gradient {name}", mine_p.grad, p.grad, grad_scale)
        worst = max(worst, results.pop(before), key=lambda r: r[1])
    results.append(("gradients (worst of every parameter: " + worst[0].removeprefix("gradient ") + ")",) + worst[1:])

    width = max(len(r[0]) for r in results)
    failed = 0
    for what, rel, diff, shape in results:
        ok = rel <= args.tol
        failed += not ok
        print(f"{what:<{width}}  max |ikem - original| {diff:.3e}  relative {rel:.3e}  {shape}  {'ok' if ok else 'DIFFERS'}")
    print(f"{len(results) - failed} of {len(results)} equal within {args.tol:g} (float64, h={args.hidden_size}, "
          f"batch {args.batch}, {t} frames, {m} persons)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
