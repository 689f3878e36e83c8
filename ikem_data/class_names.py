"""Action class names, shown wherever a label is drawn or printed (``show``, ``plot``, ``embed``).

NTU RGB+D's action names are facts of the dataset, copied from its documentation: the
"Action Classes" list of the dataset authors' README (github.com/shahroudy/NTURGB-D,
README.md at commit ac2ebc87e6e9777ea6bac67e65e53b325b903f74 of 2022-02-18, its latest
version; earlier versions called A25 "put something inside pocket / take out
something from pocket" and A119 "support somebody with one's hand (someone is sick,
help him to walk)"). A1-A60 are NTU RGB+D (CVPR 2016), A1-A120 NTU RGB+D 120 (TPAMI
2019). Only the trailing full stops were dropped and "’" became "'"; the wording is
otherwise the README's (A67 "hush (quite)" included).

The Kinect demo's five classes are :data:`ikem_data.demo_clips.DEMO_CLASSES`.

A store's labels are 0-based: label ``c`` is action ``A{c+1}``.
"""

from __future__ import annotations

from pathlib import PurePath

#: NTU RGB+D 120 action names; index c is action A{c+1} (label c). The first 60 are NTU RGB+D.
NTU_ACTIONS = (
    "drink water", "eat meal/snack", "brushing teeth", "brushing hair", "drop", "pickup", "throw",
    "sitting down", "standing up (from sitting position)", "clapping", "reading", "writing",
    "tear up paper", "wear jacket", "take off jacket", "wear a shoe", "take off a shoe",
    "wear on glasses", "take off glasses", "put on a hat/cap", "take off a hat/cap", "cheer up",
    "hand waving", "kicking something", "reach into pocket",
    "hopping (one foot jumping)", "jump up", "make a phone call/answer phone",
    "playing with phone/tablet", "typing on a keyboard", "pointing to something with finger",
    "taking a selfie", "check time (from watch)", "rub two hands together", "nod head/bow",
    "shake head", "wipe face", "salute", "put the palms together", "cross hands in front (say stop)",
    "sneeze/cough", "staggering", "falling", "touch head (headache)",
    "touch chest (stomachache/heart pain)", "touch back (backache)", "touch neck (neckache)",
    "nausea or vomiting condition", "use a fan (with hand or paper)/feeling warm",
    "punching/slapping other person", "kicking other person", "pushing other person",
    "pat on back of other person", "point finger at the other person", "hugging other person",
    "giving something to other person", "touch other person's pocket", "handshaking",
    "walking towards each other", "walking apart from each other",
    # A61-A120: NTU RGB+D 120 only
    "put on headphone", "take off headphone", "shoot at the basket", "bounce ball",
    "tennis bat swing", "juggling table tennis balls", "hush (quite)", "flick hair", "thumb up",
    "thumb down", "make ok sign", "make victory sign", "staple book", "counting money",
    "cutting nails", "cutting paper (using scissors)", "snapping fingers", "open bottle",
    "sniff (smell)", "squat down", "toss a coin", "fold paper", "ball up paper", "play magic cube",
    "apply cream on face", "apply cream on hand back", "put on bag", "take off bag",
    "put something into a bag", "take something out of a bag", "open a box", "move heavy objects",
    "shake fist", "throw up cap/hat", "hands up (both hands)", "cross arms", "arm circles",
    "arm swings", "running on the spot", "butt kicks (kick backward)", "cross toe touch",
    "side kick", "yawn", "stretch oneself", "blow nose", "hit other person with something",
    "wield knife towards other person", "knock over other person (hit with body)",
    "grab other person's stuff", "shoot at other person with a gun", "step on foot", "high-five",
    "cheers and drink", "carry something with other person", "take a photo of other person",
    "follow other person", "whisper in other person's ear", "exchange things with other person",
    "support somebody with hand",
    "finger-guessing game (playing rock-paper-scissors)",
)

#: NW-UCLA's ten actions (Wang et al., CVPR 2014, §6), by label (file codes a01-a06, a08,
#: a09, a11, a12).
NWUCLA_ACTIONS = ("pick up with one hand", "pick up with two hands", "drop trash", "walk around", "sit down",
                  "stand up", "donning", "doffing", "throw", "carry")
#: UTD-MHAD's 27 actions (Chen et al., ICIP 2015, Table 1), by label (file code aA: label A - 1).
UTD_ACTIONS = (
    "right arm swipe to the left", "right arm swipe to the right", "right hand wave", "two hand front clap",
    "right arm throw", "cross arms in the chest", "basketball shoot", "right hand draw x",
    "right hand draw circle (clockwise)", "right hand draw circle (counter clockwise)", "draw triangle",
    "bowling (right hand)", "front boxing", "baseball swing from right", "tennis right hand forehand swing",
    "arm curl (two arms)", "tennis serve", "two hand push", "right hand knock on door",
    "right hand catch an object", "right hand pick up and throw", "jogging in place", "walking in place",
    "sit to stand", "stand to sit", "forward lunge (left foot forward)", "squat (two arms stretch out)",
)
#: MSRC-12's twelve gestures as its .tagstream files name them (G1..G12), by label.
MSRC12_GESTURES = ("lift outstretched arms", "duck", "push right", "goggles", "wind it up", "shoot", "bow",
                   "throw", "had enough", "change weapon", "beat both", "kick")

#: Dataset name (as ``attrs["gendata"]["dataset"]`` records it) -> class names by label.
DATASET_CLASSES = {"ntu60": NTU_ACTIONS[:60], "ntu120": NTU_ACTIONS, "nwucla": NWUCLA_ACTIONS,
                   "utd-mhad": UTD_ACTIONS, "msrc12": MSRC12_GESTURES}


def demo_class_names() -> tuple:
    """The five class names of the bundled Kinect demo, by label."""
    from ikem_data.demo_clips import DEMO_CLASSES

    return tuple(name for _, name in DEMO_CLASSES)


def dataset_class_names(dataset) -> tuple | None:
    """Class names (by 0-based label) of a dataset ikem knows, else None.

    Args:
        dataset: a key of :data:`DATASET_CLASSES` (``"ntu60"``, ``"ntu120"``, ``"nwucla"``,
            ``"utd-mhad"``, ``"msrc12"``) or anything else (None).
    """
    return DATASET_CLASSES.get(dataset)


def _ntu_action(name):
    """The action number of an ``SsssCcccPpppRrrrAaaa`` name, or None."""
    from ikem_data.formats.ntu import parse_name

    try:
        return parse_name(name).action
    except (ValueError, TypeError):
        return None


def names_from_samples(sample_names, labels) -> tuple | None:
    """Class names inferred from sample names and their labels, or None when they say nothing.

    - Every name an NTU name whose action ``Aaaa`` is ``label + 1``: the NTU RGB+D 120 names
      (the first 60 are NTU RGB+D's).
    - Every name the file of a Kinect demo capture (``clips/Ges01_wavehand_t000.csv`` or
      ``Ges01_wavehand.csv``) whose capture is the label's in ``DEMO_CLASSES``: the demo names.

    Args:
        sample_names: sequence of str; labels: sequence of int, same length.
    """
    from ikem_data.demo_clips import DEMO_CLASSES

    pairs = [(str(n), int(c)) for n, c in zip(sample_names, labels)]
    if not pairs:
        return None
    if all(_ntu_action(n) == c + 1 for n, c in pairs):
        return NTU_ACTIONS
    stems = [PurePath(file).stem for file, _ in DEMO_CLASSES]
    if all(0 <= c < len(stems) and PurePath(n).name.startswith(stems[c]) for n, c in pairs):
        return demo_class_names()
    return None


def store_class_names(store, num_class=None) -> list[str]:
    """Class names of an open store's labels, ``names[c]`` for label c.

    The dataset the store records (``attrs["gendata"]["dataset"]``, :data:`DATASET_CLASSES`) decides;
    otherwise the sample names and labels (:func:`names_from_samples`); otherwise
    ``"class c"``. The list has at least ``num_class`` entries and covers every label in
    ``raw/label`` (labels beyond a known table are named ``"class c"``).
    """
    import numpy as np

    gen = store.stage("gendata") or {}
    dataset = gen.get("dataset") or (gen.get("params") or {}).get("dataset")
    labels = np.asarray(store["raw/label"][...]) if "raw/label" in store else np.zeros(0, dtype=np.int64)
    table = dataset_class_names(dataset)
    if table is None and "raw/name" in store:
        table = names_from_samples(store.names(), labels)
    count = max(int(num_class or 0), int(labels.max()) + 1 if labels.size else 0)
    return pad_names(table, count)


def pad_names(table, count) -> list[str]:
    """``table`` (or nothing) as a list of at least ``count`` names, ``"class c"`` where it ends."""
    table = list(table or ())
    return table + [f"class {c}" for c in range(len(table), count)]


def label_name(names, label) -> str:
    """``names[label]``, or ``"class <label>"`` when the table has no such entry."""
    label = int(label)
    return names[label] if 0 <= label < len(names) else f"class {label}"
