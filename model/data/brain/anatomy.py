"""The curated anatomy table: what each AAL label is called, how structures group, and facts between them.

Every AAL label (``Putamen_L``) becomes a *structure* with a plain English name (``putamen``) and a
side (the patient's ``left``); the eight vermis labels are one structure, ``vermis``. *Groups* are
unions of structures on one side (lobes, striatum, basal ganglia, cerebellar hemisphere, ...) or of
both sides (cerebellum); a group's members may be groups. Lobes follow classical gross anatomy;
AAL regions that straddle two lobes (paracentral lobule, rolandic operculum, fusiform gyrus,
olfactory cortex) and the insula belong to no lobe rather than to a wrong one. *Facts* are
same-side pairs that anatomy knowledge, not the picture, links ("the nucleus that forms the
striatum with the caudate nucleus" is the putamen).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

SIDES = {"L": "left", "R": "right"}


@dataclass(frozen=True)
class Structure:
    """One AAL region as the dialogues name it; ``kind`` is what sort of thing it is."""

    aal: str  # AAL name without its side suffix, e.g. "Frontal_Inf_Tri"
    name: str  # e.g. "triangular part of the inferior frontal gyrus"
    kind: str  # gyrus, nucleus, cortex, lobule, ...


@dataclass(frozen=True)
class Group:
    """A union of structures (or groups); ``word`` is how a question names its kind ("the lobe that ...")."""

    name: str
    word: str
    members: tuple[str, ...]
    sided: bool = True


STRUCTURES = tuple(Structure(*row) for row in (
    ("Precentral", "precentral gyrus", "gyrus"),
    ("Frontal_Sup", "superior frontal gyrus", "gyrus"),
    ("Frontal_Sup_Orb", "orbital part of the superior frontal gyrus", "gyrus"),
    ("Frontal_Mid", "middle frontal gyrus", "gyrus"),
    ("Frontal_Mid_Orb", "orbital part of the middle frontal gyrus", "gyrus"),
    ("Frontal_Inf_Oper", "opercular part of the inferior frontal gyrus", "gyrus"),
    ("Frontal_Inf_Tri", "triangular part of the inferior frontal gyrus", "gyrus"),
    ("Frontal_Inf_Orb", "orbital part of the inferior frontal gyrus", "gyrus"),
    ("Rolandic_Oper", "rolandic operculum", "cortex"),
    ("Supp_Motor_Area", "supplementary motor area", "cortex"),
    ("Olfactory", "olfactory cortex", "cortex"),
    ("Frontal_Sup_Medial", "medial superior frontal gyrus", "gyrus"),
    ("Frontal_Med_Orb", "medial orbitofrontal gyrus", "gyrus"),
    ("Rectus", "gyrus rectus", "gyrus"),
    ("Insula", "insula", "cortex"),
    ("Cingulum_Ant", "anterior cingulate gyrus", "gyrus"),
    ("Cingulum_Mid", "middle cingulate gyrus", "gyrus"),
    ("Cingulum_Post", "posterior cingulate gyrus", "gyrus"),
    ("Hippocampus", "hippocampus", "cortex"),
    ("ParaHippocampal", "parahippocampal gyrus", "gyrus"),
    ("Amygdala", "amygdala", "nucleus"),
    ("Calcarine", "calcarine cortex", "cortex"),
    ("Cuneus", "cuneus", "gyrus"),
    ("Lingual", "lingual gyrus", "gyrus"),
    ("Occipital_Sup", "superior occipital gyrus", "gyrus"),
    ("Occipital_Mid", "middle occipital gyrus", "gyrus"),
    ("Occipital_Inf", "inferior occipital gyrus", "gyrus"),
    ("Fusiform", "fusiform gyrus", "gyrus"),
    ("Postcentral", "postcentral gyrus", "gyrus"),
    ("Parietal_Sup", "superior parietal lobule", "lobule"),
    ("Parietal_Inf", "inferior parietal lobule", "lobule"),
    ("SupraMarginal", "supramarginal gyrus", "gyrus"),
    ("Angular", "angular gyrus", "gyrus"),
    ("Precuneus", "precuneus", "gyrus"),
    ("Paracentral_Lobule", "paracentral lobule", "lobule"),
    ("Caudate", "caudate nucleus", "nucleus"),
    ("Putamen", "putamen", "nucleus"),
    ("Pallidum", "globus pallidus", "nucleus"),
    ("Thalamus", "thalamus", "nucleus"),
    ("Heschl", "transverse temporal gyrus", "gyrus"),
    ("Temporal_Sup", "superior temporal gyrus", "gyrus"),
    ("Temporal_Pole_Sup", "superior temporal pole", "cortex"),
    ("Temporal_Mid", "middle temporal gyrus", "gyrus"),
    ("Temporal_Pole_Mid", "middle temporal pole", "cortex"),
    ("Temporal_Inf", "inferior temporal gyrus", "gyrus"),
    ("Cerebelum_Crus1", "cerebellar crus I", "lobule"),
    ("Cerebelum_Crus2", "cerebellar crus II", "lobule"),
    ("Cerebelum_3", "cerebellar lobule III", "lobule"),
    ("Cerebelum_4_5", "cerebellar lobules IV-V", "lobule"),
    ("Cerebelum_6", "cerebellar lobule VI", "lobule"),
    ("Cerebelum_7b", "cerebellar lobule VIIb", "lobule"),
    ("Cerebelum_8", "cerebellar lobule VIII", "lobule"),
    ("Cerebelum_9", "cerebellar lobule IX", "lobule"),
    ("Cerebelum_10", "cerebellar lobule X", "lobule"),
    ("Vermis", "vermis", "lobule"),  # Vermis_1_2 ... Vermis_10, merged: the midline, no side
))
BY_AAL = {s.aal: s for s in STRUCTURES}
BY_NAME = {s.name: s for s in STRUCTURES}

_CEREBELLAR = tuple(s.name for s in STRUCTURES if s.aal.startswith("Cerebelum_"))
GROUPS = (
    Group("frontal lobe", "lobe", ("precentral gyrus", "superior frontal gyrus", "orbital part of the superior "
          "frontal gyrus", "middle frontal gyrus", "orbital part of the middle frontal gyrus", "opercular part of "
          "the inferior frontal gyrus", "triangular part of the inferior frontal gyrus", "orbital part of the "
          "inferior frontal gyrus", "supplementary motor area", "medial superior frontal gyrus",
          "medial orbitofrontal gyrus", "gyrus rectus")),
    Group("parietal lobe", "lobe", ("postcentral gyrus", "superior parietal lobule", "inferior parietal lobule",
                                    "supramarginal gyrus", "angular gyrus", "precuneus")),
    # the medial temporal structures lie in the temporal lobe; the fusiform gyrus spans temporal and occipital
    Group("temporal lobe", "lobe", ("transverse temporal gyrus", "superior temporal gyrus", "superior temporal pole",
                                    "middle temporal gyrus", "middle temporal pole", "inferior temporal gyrus",
                                    "hippocampus", "parahippocampal gyrus", "amygdala")),
    Group("occipital lobe", "lobe", ("calcarine cortex", "cuneus", "lingual gyrus", "superior occipital gyrus",
                                     "middle occipital gyrus", "inferior occipital gyrus")),
    Group("cingulate gyrus", "cingulate gyrus", ("anterior cingulate gyrus", "middle cingulate gyrus",
                                                 "posterior cingulate gyrus")),
    Group("striatum", "striatum", ("caudate nucleus", "putamen")),
    Group("lentiform nucleus", "lentiform nucleus", ("putamen", "globus pallidus")),
    Group("basal ganglia", "basal ganglia", ("striatum", "lentiform nucleus")),  # the thalamus is not one of them
    Group("cerebral hemisphere", "cerebral hemisphere", ("frontal lobe", "parietal lobe", "temporal lobe",
          "occipital lobe", "cingulate gyrus", "basal ganglia", "thalamus", "insula", "fusiform gyrus",
          "paracentral lobule", "rolandic operculum", "olfactory cortex")),
    Group("cerebellar hemisphere", "cerebellar hemisphere", _CEREBELLAR),
    Group("cerebellum", "cerebellum", ("cerebellar hemisphere", "vermis"), sided=False),
)
GROUP_BY_NAME = {g.name: g for g in GROUPS}
GROUP_WORDS = tuple(dict.fromkeys(g.word for g in GROUPS))


@dataclass(frozen=True)
class Fact:
    """Same-side pairs that anatomy links: ``pairs[source] = target`` (structure names)."""

    name: str
    pairs: dict[str, str]
    phrases: tuple[str, ...]
    held_out: tuple[str, ...]
    its: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()  # how an answer says the link, with {ref}: "forming the striatum with {ref}"


def _both_ways(a: str, b: str) -> dict[str, str]:
    return {a: b, b: a}


FACTS = (
    Fact("striatum_partner", _both_ways("caudate nucleus", "putamen"),
         ("the nucleus that forms the striatum with {ref}", "the nucleus that together with {ref} makes up the "
          "striatum", "the striatal partner of {ref}"),
         ("the other nucleus of the striatum besides {ref}",), its=("its partner in the striatum",),
         answers=("forming the striatum with {ref}", "in the striatum with {ref}")),
    Fact("lentiform_partner", _both_ways("putamen", "globus pallidus"),
         ("the nucleus that forms the lentiform nucleus with {ref}", "the nucleus that together with {ref} makes "
          "up the lentiform nucleus", "the lentiform partner of {ref}"),
         ("the other part of the lentiform nucleus besides {ref}",), its=("its partner in the lentiform nucleus",),
         answers=("forming the lentiform nucleus with {ref}",)),
    Fact("central_sulcus", _both_ways("precentral gyrus", "postcentral gyrus"),
         ("the gyrus across the central sulcus from {ref}", "the gyrus on the other bank of the central sulcus "
          "from {ref}", "the gyrus that faces {ref} across the central sulcus"),
         ("the gyrus separated from {ref} by the central sulcus",), its=("its partner across the central sulcus",),
         answers=("across the central sulcus from {ref}",)),
    Fact("calcarine_banks", _both_ways("cuneus", "lingual gyrus"),
         ("the gyrus across the calcarine sulcus from {ref}", "the gyrus on the other bank of the calcarine sulcus "
          "from {ref}", "the gyrus that faces {ref} across the calcarine sulcus"),
         ("the gyrus separated from {ref} by the calcarine sulcus",), its=("its partner across the calcarine sulcus",),
         answers=("across the calcarine sulcus from {ref}",)),
    Fact("amygdala_of", {"hippocampus": "amygdala"},
         ("the almond-shaped nucleus at the front of {ref}", "the nucleus just anterior to {ref} in the medial "
          "temporal lobe", "the amygdaloid nucleus in front of {ref}"),
         ("the nucleus capping the front end of {ref}",), answers=("in front of {ref}", "anterior to {ref}")),
    Fact("hippocampus_of", {"amygdala": "hippocampus"},
         ("the seahorse-shaped structure behind {ref}", "the structure just posterior to {ref} in the medial "
          "temporal lobe", "the memory structure behind {ref}"),
         ("the curved memory structure lying behind {ref}",), answers=("behind {ref}", "posterior to {ref}")),
    Fact("auditory_bearer", {"transverse temporal gyrus": "superior temporal gyrus"},
         ("the gyrus on whose upper surface {ref} lies", "the gyrus that carries {ref} on the upper surface",
          "the temporal gyrus bearing {ref}"),
         ("the gyrus whose top surface holds {ref}",), answers=("bearing {ref}", "carrying {ref}")),
)


def parse_aal(label: str) -> tuple[Structure, str | None]:
    """``"Putamen_L"`` -> (putamen, "left"); the vermis labels -> (vermis, None)."""
    if label.startswith("Vermis"):
        return BY_AAL["Vermis"], None
    base, _, suffix = label.rpartition("_")
    if suffix not in SIDES or base not in BY_AAL:
        raise ValueError(f"unknown AAL label {label!r}: expected <region>_L / <region>_R or Vermis_*")
    return BY_AAL[base], SIDES[suffix]


@cache
def descendants(name: str) -> frozenset[str]:
    """Every structure and group inside the group ``name`` (empty for a structure)."""
    group = GROUP_BY_NAME.get(name)
    if group is None:
        return frozenset()
    out = set(group.members)
    for m in group.members:
        out |= descendants(m)
    return frozenset(out)


def leaves(name: str) -> frozenset[str]:
    """The structures a group (or a structure: itself) is made of."""
    if name in BY_NAME:
        return frozenset({name})
    return frozenset(d for d in descendants(name) if d in BY_NAME)


def container(name: str, word: str) -> str | None:
    """The group of kind ``word`` that holds ``name`` (e.g. the lobe of a gyrus), or None."""
    found = [g.name for g in GROUPS if g.word == word and name in descendants(g.name)]
    if len(found) > 1:
        raise AssertionError(f"{name} lies in several groups of kind {word}: {found}")
    return found[0] if found else None


def swap_side(side: str | None) -> str | None:
    return {"left": "right", "right": "left"}.get(side, side)
