"""UmURL's network (Sun et al., ACM MM 2023, "Unified Multi-modal Unsupervised Representation
Learning for Skeleton-based Action Understanding"; code HuiGuanLab/UmURL, ``umurl.py``, read at
commit 744278b): modality-specific token embeddings, an averaging early fusion and one
modality-agnostic spatial-temporal transformer shared by joint, bone and motion.

Tokens (:func:`tokens`), from one modality's sequence ``x`` (N, C, T, V, M):

- temporal tokens ``(N, T, M·V·C)``: one per frame, every person's joints' coordinates
  (person-major, then joint, then coordinate);
- spatial tokens ``(N, M·V, T·C)``: one per (person, joint), its whole trajectory
  (frame-major, then coordinate).

No token is masked (UmURL has no attention mask): an absent person's joints are zeros and
are still M·V of the spatial tokens and part of every temporal token, as in the original.

Modalities (:func:`modality`), computed from the joint sequence as UmURL's
``modality_generation`` does (never read from the store: UmURL augments the joints first,
and its bone and motion differ from ikem's stored ones): joint ``x``; bone
``x_v - x_u`` over the layout's ``crossclr`` pairs (the ST-GCN / CrosSCLR bones, the root
bone zero; UmURL's ``self.Bone``); motion ``x[t+1] - x[t]`` with the last frame zero (no
time scale, unlike ikem's stored motion).

Shapes below: N samples, h = ``hidden_size`` (UmURL: 1024), features ``2h``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ikem_data.layouts import get_layout

#: The modalities UmURL learns, in its order (j, b, m).
UMURL_MODALITIES = ("joint", "bone", "motion")
#: The feature name of the fused multi-modal representation (UmURL's ``y_u``).
MULTIMODAL = "multimodal"
#: Every feature a UmURL checkpoint gives: the fused one and each modality's.
UMURL_FEATURES = (MULTIMODAL,) + UMURL_MODALITIES


def modality(joint: torch.Tensor, name: str, layout=None) -> torch.Tensor:
    """One UmURL modality of a joint sequence (UmURL ``modality_generation``).

    Args:
        joint: (N, C, T, V, M) float joint positions (metres).
        name: ``joint``, ``bone`` or ``motion``.
        layout: skeleton layout (name or :class:`ikem_data.layouts.Layout`; None: Kinect v2);
            bones are its ``crossclr`` pairs.

    Returns:
        (N, C, T, V, M), same dtype: joint as given; bone ``x_v - x_u`` (root bone 0);
        motion ``x[:, :, t+1] - x[:, :, t]``, frame T-1 zero. Units: metres (per frame).

    Raises:
        ValueError: an unknown modality name.
    """
    if name == "joint":
        return joint
    if name == "bone":
        layout = layout if hasattr(layout, "bones") else get_layout(layout)
        pairs = torch.as_tensor(layout.bones("crossclr"), dtype=torch.long, device=joint.device)  # (V, 2): (v, u)
        return joint[:, :, :, pairs[:, 0]] - joint[:, :, :, pairs[:, 1]]
    if name == "motion":
        out = torch.zeros_like(joint)
        out[:, :, :-1] = joint[:, :, 1:] - joint[:, :, :-1]
        return out
    raise ValueError(f"unknown UmURL modality {name!r}; valid: {', '.join(UMURL_MODALITIES)}")


def tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal and spatial tokens of one modality's sequence.

    Args:
        x: (N, C, T, V, M).

    Returns:
        ``(temporal (N, T, M·V·C), spatial (N, M·V, T·C))``: temporal token t holds
        ``x[n, c, t, v, m]`` at ``(m·V + v)·C + c``; spatial token ``m·V + v`` holds it at
        ``t·C + c``.
    """
    n, c, t, v, m = x.shape
    temporal = x.permute(0, 2, 4, 3, 1).reshape(n, t, m * v * c)  # (N, T, M, V, C) -> (N, T, MVC)
    spatial = x.permute(0, 4, 3, 2, 1).reshape(n, m * v, t * c)  # (N, M, V, T, C) -> (N, MV, TC)
    return temporal, spatial


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """(1, length, width) sinusoidal positions (Vaswani et al. 2017) in the default dtype: even
    columns ``sin(p / 10000^(2i/width))``, odd columns the cosine, as UmURL's ``PositionalEncoding``."""
    dtype = torch.get_default_dtype()
    position = torch.arange(length, dtype=dtype)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, dtype=dtype) * (-math.log(10000.0) / width))
    table = torch.zeros(1, length, width)
    table[0, :, 0::2] = torch.sin(position * freq)
    table[0, :, 1::2] = torch.cos(position * freq)[:, : width // 2]
    return table


def _mlp_embedding(inputs: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, hidden))


class TokenEmbedding(nn.Module):
    """One modality's embeddings (UmURL ``MS_Emb``): ``Linear → LayerNorm → ReLU → Linear``,
    one for temporal tokens and one for spatial tokens.

    ``forward(temporal (N, T, t_in), spatial (N, S, s_in))`` -> ``((N, T, h), (N, S, h))``.
    """

    def __init__(self, t_inputs: int, s_inputs: int, hidden: int):
        super().__init__()
        self.temporal = _mlp_embedding(t_inputs, hidden)
        self.spatial = _mlp_embedding(s_inputs, hidden)

    def forward(self, temporal, spatial):
        return self.temporal(temporal), self.spatial(spatial)


class SpatialTemporalTransformer(nn.Module):
    """The modality-agnostic encoder (UmURL ``ST_TR``): a temporal and a spatial post-norm
    transformer (``num_layers`` layers, ``num_heads`` heads, feed-forward width h, ReLU, no
    dropout); sinusoidal positions are added to the temporal tokens only; each stream is
    max-pooled over its tokens and the two are concatenated.

    ``forward(temporal (N, T, h), spatial (N, S, h))`` -> (N, 2h): ``[max_t, max_s]``.
    """

    def __init__(self, hidden: int, num_heads: int, num_layers: int, max_len: int = 200):
        super().__init__()

        def stack():
            layer = nn.TransformerEncoderLayer(hidden, num_heads, dim_feedforward=hidden, dropout=0.0,
                                               batch_first=True)
            return nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

        self.temporal = stack()
        self.spatial = stack()
        self.register_buffer("positions", sinusoidal_positions(max_len, hidden), persistent=False)

    def forward(self, temporal, spatial):
        if temporal.shape[1] > self.positions.shape[1]:
            raise ValueError(f"{temporal.shape[1]} temporal tokens, more than the {self.positions.shape[1]} positions")
        t = self.temporal(temporal + self.positions[:, : temporal.shape[1]].to(temporal.dtype))
        s = self.spatial(spatial)
        return torch.cat([t.amax(dim=1), s.amax(dim=1)], dim=1)


class UmURLBackbone(nn.Module):
    """Embeddings, early fusion and the shared encoder (UmURL ``BaseEncoder``).

    Args:
        frames: T, frames per sequence (UmURL: 64). joints: V. persons: M. channels: C (3).
        hidden_size: h (1024); num_heads (1); num_layers (1).

    Methods take a joint sequence (N, C, T, V, M) and compute the modalities themselves
    (:func:`modality`). State dict: ``embed.<m>.{temporal,spatial}.*``,
    ``fuse_temporal.weight``, ``fuse_spatial.weight``, ``encoder.{temporal,spatial}.*``.
    """

    def __init__(self, frames=64, joints=25, persons=2, channels=3, hidden_size=1024, num_heads=1, num_layers=1,
                 layout=None):
        super().__init__()
        self.frames, self.joints, self.persons, self.channels = int(frames), int(joints), int(persons), int(channels)
        self.layout = get_layout(layout)
        if self.layout.num_joints != self.joints:
            raise ValueError(f"layout {self.layout.name} has {self.layout.num_joints} joints, not {self.joints}")
        t_in, s_in = self.persons * self.joints * self.channels, self.frames * self.channels
        self.embed = nn.ModuleDict({m: TokenEmbedding(t_in, s_in, hidden_size) for m in UMURL_MODALITIES})
        self.fuse_temporal = nn.Linear(hidden_size, hidden_size, bias=False)
        self.fuse_spatial = nn.Linear(hidden_size, hidden_size, bias=False)
        self.encoder = SpatialTemporalTransformer(hidden_size, num_heads, num_layers)
        self.feature_dim = 2 * hidden_size

    def check_input(self, joint):
        """Raise ValueError unless ``joint`` is (N, C, T, V, M) with this backbone's C, T, V, M."""
        want = (self.channels, self.frames, self.joints, self.persons)
        if joint.dim() != 5 or tuple(joint.shape[1:]) != want:
            raise ValueError(f"UmURL expects joints (N, {', '.join(map(str, want))}), got {tuple(joint.shape)}")

    def embedded(self, joint, name):
        """``(temporal (N, T, h), spatial (N, M·V, h))`` embeddings of modality ``name`` of ``joint``."""
        return self.embed[name](*tokens(modality(joint, name, self.layout)))

    def single(self, joint, name):
        """(N, 2h) uni-modal feature ``y_m`` of one modality (UmURL ``uni_forward``)."""
        self.check_input(joint)
        return self.encoder(*self.embedded(joint, name))

    def fused(self, joint):
        """(N, 2h) multi-modal feature ``y_u`` (UmURL ``mm_forward``): the three modalities'
        embeddings averaged, then the bias-free fusion layers, then the shared encoder."""
        self.check_input(joint)
        parts = [self.embedded(joint, m) for m in UMURL_MODALITIES]
        temporal = sum(p[0] for p in parts) / len(parts)
        spatial = sum(p[1] for p in parts) / len(parts)
        return self.encoder(self.fuse_temporal(temporal), self.fuse_spatial(spatial))

    def feature(self, joint, name):
        """(N, 2h) feature ``name``: :data:`MULTIMODAL` (fused) or one of :data:`UMURL_MODALITIES`."""
        return self.fused(joint) if name == MULTIMODAL else self.single(joint, name)


def projector(width: int, out: int) -> nn.Sequential:
    """A modality-aware projector (UmURL ``{j,b,m}_projector``): two ``Linear → BatchNorm1d →
    ReLU`` blocks of ``width`` and a final ``Linear(width, out)``. (N, width) -> (N, out)."""
    return nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                         nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                         nn.Linear(width, out))


class UmURLFeature(nn.Module):
    """One frozen-evaluation feature of a backbone: ``forward(joint (N, C, T, V, M)) -> (N, 2h)``.

    Several share one backbone; ``input_modality`` (``"joint"``) names the store array each
    reads (the evaluation path reads it once for all of them).
    """

    input_modality = "joint"

    def __init__(self, backbone: UmURLBackbone, name: str):
        super().__init__()
        if name not in UMURL_FEATURES:
            raise ValueError(f"unknown UmURL feature {name!r}; valid: {', '.join(UMURL_FEATURES)}")
        self.backbone, self.name = backbone, name

    def forward(self, joint):
        return self.backbone.feature(joint, self.name)


def backbone_kwargs(model_cfg: dict, umurl_cfg: dict) -> dict:
    """:class:`UmURLBackbone` keyword arguments from the ``model`` and ``umurl`` config
    sections (dicts, as a checkpoint holds them; ``umurl.persons`` filled in by the job)."""
    layout = get_layout(model_cfg.get("layout"))
    return {"frames": umurl_cfg["t_length"], "joints": layout.num_joints, "persons": umurl_cfg["persons"] or 2,
            "channels": model_cfg.get("in_channels", 3), "hidden_size": umurl_cfg["hidden_size"],
            "num_heads": umurl_cfg["num_heads"], "num_layers": umurl_cfg["num_layers"], "layout": layout.name}
