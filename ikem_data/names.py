"""Names shared by both halves of ikem: modalities, benchmarks, store paths.

Modalities are data: every command loops over these names, never over copies of code.
"""

from ikem_data.quoting import quote

# Order matters: it is the reference's channel order for the IKEM concatenated key
# (METHOD.md §6.4: j, m, b, a, r, o) and the order of `--modalities all`.
MODALITIES = ("joint", "motion", "bone", "acceleration", "rotation_axis", "angular_velocity")
MODALITY_ALIASES = {"omega": "angular_velocity", "rotation": "rotation_axis", "accel": "acceleration"}
STUDENT_MODALITIES = ("joint", "motion", "bone")

BENCHMARKS = ("ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset",
              "pku1-xsub", "pku1-xview", "pku2-xsub", "pku2-xview",
              "nwucla-xview", "utd-xsub", "msrc12-xsub")

STORE_FORMAT = "ikem-store"
STORE_VERSION = 1


def resolve_modalities(spec):
    """Parse a modality list.

    Args:
        spec: ``"all"``, a comma-separated string such as ``"joint,bone"`` or
            ``"joint,omega"``, or an iterable of names. Aliases: ``omega`` for
            ``angular_velocity``.

    Returns:
        tuple of canonical names in the order given (``all`` gives :data:`MODALITIES`).

    Raises:
        ValueError: an unknown or repeated name (the message lists the valid names), or
            something other than a string or a list of strings.
    """
    if isinstance(spec, str):
        if spec.strip() == "all":
            return MODALITIES
        spec = [part for part in spec.split(",") if part.strip()]
    # a YAML number, mapping or nested list (a config, a checkpoint) was an AttributeError traceback
    spec = list(spec) if hasattr(spec, "__iter__") and not isinstance(spec, dict) else spec
    if not isinstance(spec, list) or not all(isinstance(raw, str) for raw in spec):
        raise ValueError("expected modality names: a list or a comma-separated string")  # a config adds (got ...)
    names = []
    for raw in spec:
        name = MODALITY_ALIASES.get(raw.strip(), raw.strip())
        if name not in MODALITIES:
            valid = ", ".join(MODALITIES) + " (alias: omega = angular_velocity), or all"
            raise ValueError(f"unknown modality {quote(raw.strip())}; valid: {valid}")
        if name in names:
            raise ValueError(f"modality {name!r} is listed twice")
        names.append(name)
    if not names:
        raise ValueError("no modality given")
    return tuple(names)
