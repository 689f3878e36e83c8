"""UmURL checkpoints in the shared evaluation path (:mod:`ikem_train.eval.features`): which
features a job evaluates and the frozen modules that give them.

A UmURL checkpoint has one backbone (:class:`ikem_train.nets.umurl.UmURLBackbone`) and four
features: ``multimodal`` (the fused ``y_u``, UmURL's evaluation feature and the default) and
``joint``, ``bone``, ``motion`` (each modality's own ``y_m``). Every feature reads the store's
``joint`` array (:attr:`ikem_train.nets.umurl.UmURLFeature.input_modality`).
"""

from __future__ import annotations

from torch import nn

from ikem_train.eval.features import EvaluationError
from ikem_train.nets.umurl import MULTIMODAL, UMURL_FEATURES, UmURLBackbone, UmURLFeature, backbone_kwargs


def umurl_features(requested=None) -> tuple[str, ...]:
    """The UmURL features to evaluate: ``requested`` names among ``multimodal`` (the fused
    feature ``y_u``, the default), ``joint``, ``bone``, ``motion`` (uni-modal ``y_m``); ``"all"``: the four.

    Raises:
        EvaluationError: an unknown or repeated name.
    """
    if requested is None:
        return (MULTIMODAL,)
    if isinstance(requested, str):
        if requested.strip() == "all":
            return UMURL_FEATURES
        requested = [part.strip() for part in requested.split(",") if part.strip()]
    names = tuple(requested)
    unknown = [m for m in names if m not in UMURL_FEATURES]
    if unknown or len(set(names)) != len(names) or not names:
        raise EvaluationError(f"UmURL features are {', '.join(UMURL_FEATURES)} (or all); got {', '.join(names) or 'none'}")
    return names


def umurl_encoders(model_cfg: dict, names, state=None) -> nn.ModuleDict:
    """UmURL features ``names`` over one backbone (random, or loaded strictly from ``state``,
    a UmURLModel state dict), frozen and in eval mode. ``model_cfg``: the ``model`` section
    with the ``umurl`` section under ``"umurl"``.

    Raises:
        EvaluationError: missing or unexpected backbone keys, or a shape mismatch.
    """
    backbone = UmURLBackbone(**backbone_kwargs(model_cfg, model_cfg["umurl"]))
    if state is not None:
        given = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        want = set(backbone.state_dict())
        missing, unexpected = sorted(want - set(given)), sorted(set(given) - want)
        if missing or unexpected:
            raise EvaluationError(f"checkpoint UmURL backbone does not match its config: missing keys "
                                  f"{missing[:5] or 'none'}; unexpected keys {unexpected[:5] or 'none'}")
        try:
            backbone.load_state_dict(given, strict=True)
        except RuntimeError as exc:  # shape mismatch
            raise EvaluationError(f"checkpoint UmURL backbone: {exc}".replace("\n", " ")) from None
    backbone.requires_grad_(False).eval()
    return nn.ModuleDict({m: UmURLFeature(backbone, m) for m in names}).eval()
