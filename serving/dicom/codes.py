"""Coded concepts for what a round segments: the model's vocabulary as SNOMED CT, else a local scheme.

A DICOM SEG segment says what it is with codes, not words: a category (anatomical structure, tissue,
morphologically abnormal structure), a type (liver, nodule, ...), for a lesion the region it lies in,
and a laterality for paired structures. The vocabulary is the model's: the phantom scenes
(``model/data/phantoms``), the real CT slices' labels (``model/data/real``) and the AAL atlas of the
real brain (``/usr/share/mricron/templates/aal.nii.txt``).

Every SNOMED code here is taken from pydicom's code dictionary (``codes.SCT.<Keyword>``, DICOM PS3.16),
so a missing or mistyped one fails at import, never in a PACS. Concepts that dictionary lacks (most
cortical gyri, cerebellar lobules, the vermis, psoas, gluteus maximus, hip bone, tumour core) get a
code of our own under :data:`LOCAL_SCHEME`, identified in every SEG by :data:`LOCAL_SCHEME_ITEM`; a
local code never changes its meaning once released (add new values, never reuse one).

Laterality (SNOMED Left / Right / Bilateral, CID 244) is read from the words: "left" or "right" just
before a paired structure's name, "both" or "bilateral" for both sides, or "of the left ..." just
after it ("the lower lobe of the left lung"). Questions say the patient's side; image directions
("to the left of it in the image") name no structure and are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

SCT = codes.SCT
ANATOMY = SCT.AnatomicalStructure  # 91723000, a segmentation property category (CID 7150)
ABNORMAL = SCT.MorphologicallyAbnormalStructure  # 49755003: lesions, tumours, nodules, cysts, effusions
TISSUE = SCT.Tissue  # 85756007
LEFT, RIGHT, BILATERAL = SCT.Left, SCT.Right, SCT.Bilateral

LOCAL_SCHEME = "99MEDIROUND"  # "99" marks a private designator (PS3.16 section 8.2)
LOCAL_SCHEME_ITEM = CodingSchemeIdentificationItem(
    designator=LOCAL_SCHEME, name="MediRound Serve anatomy codes", version="1",
    responsible_organization="MediRound Serve")


def _local(value: str, meaning: str) -> Code:
    return Code(value, LOCAL_SCHEME, meaning)


@dataclass(frozen=True)
class Concept:
    """One thing a round can name, and its codes."""

    names: tuple[str, ...]
    """Names as questions and answers say them, compared after :func:`normalise` (plurals in -s/-es match too)."""
    type: Code
    category: Code = ANATOMY
    region: Code | None = None
    """For an abnormal structure: the organ it lies in (a liver lesion is a lesion in the liver)."""
    paired: bool = False
    """Takes a laterality from the words around its name."""


@dataclass(frozen=True)
class CodedStructure:
    """What one round segments, as a SEG segment codes it."""

    name: str
    """The name the round used ("" when it used none and the concept is the generic one)."""
    category: Code
    type: Code
    region: Code | None = None
    laterality: Code | None = None

    @property
    def generic(self) -> bool:
        return not self.name


# A round that names no structure ("its left neighbour", "the structure surrounding it") is coded as
# SNOMED "Anatomical Structure" (91723000), the most general concept of the category it is coded in:
# true of every answer the model gives, and a viewer shows the segment's label (the question) beside it.
GENERIC = CodedStructure(name="", category=ANATOMY, type=ANATOMY)

_P = dict(paired=True)

CONCEPTS: tuple[Concept, ...] = (
    # Phantom scenes (model/data/phantoms): CT abdomen and chest, MR brain, chest X-ray, thyroid US.
    Concept(("liver",), SCT.Liver),
    Concept(("spleen",), SCT.Spleen),
    Concept(("stomach",), SCT.Stomach),
    Concept(("gallbladder", "gall bladder"), SCT.Gallbladder),
    Concept(("kidney",), SCT.Kidney, **_P),
    Concept(("renal pelvis",), SCT.RenalPelvis, **_P),
    Concept(("aorta",), SCT.Aorta),
    Concept(("inferior vena cava", "ivc"), SCT.InferiorVenaCava),
    Concept(("heart",), SCT.Heart),
    Concept(("lung",), SCT.Lung, **_P),
    Concept(("trachea",), SCT.Trachea),
    Concept(("skull",), SCT.Skull),
    Concept(("brain",), SCT.Brain),
    Concept(("cerebral hemisphere", "hemisphere"), SCT.CerebralHemisphere, **_P),
    Concept(("lateral ventricle",), SCT.LateralVentricle, **_P),
    Concept(("thyroid isthmus", "isthmus of the thyroid"), SCT.ThyroidIsthmus),
    Concept(("thyroid", "thyroid gland"), SCT.Thyroid),
    Concept(("thyroid lobe", "lobe of the thyroid"), SCT.LobeOfThyroid, **_P),
    Concept(("carotid artery", "carotid"), SCT.CarotidArtery, **_P),
    Concept(("jugular vein", "internal jugular vein"), SCT.InternalJugularVein, **_P),
    Concept(("clavicle",), SCT.Clavicle, **_P),
    Concept(("vertebra", "vertebrae", "vertebral body"), SCT.Vertebra),
    Concept(("spinal canal", "vertebral canal"), SCT.VertebralCanal),
    Concept(("psoas muscle", "psoas"), _local("MRA101", "Psoas muscle"), **_P),
    Concept(("subcutaneous fat", "subcutaneous tissue"), SCT.SubcutaneousTissue, TISSUE),
    # Phantom lesions: the morphology, in the organ it lies in.
    Concept(("liver lesion", "hepatic lesion", "lesion of the liver"), SCT.Lesion, ABNORMAL, SCT.Liver),
    Concept(("kidney lesion", "renal lesion", "lesion of the kidney"), SCT.Lesion, ABNORMAL, SCT.Kidney, **_P),
    Concept(("lung nodule", "pulmonary nodule"), SCT.Nodule, ABNORMAL, SCT.Lung, **_P),
    Concept(("thyroid nodule",), SCT.Nodule, ABNORMAL, SCT.Thyroid, **_P),
    Concept(("brain tumor", "brain neoplasm"), SCT.Neoplasm, ABNORMAL, SCT.Brain, **_P),
    Concept(("tumor core",), _local("MRA102", "Tumor core"), ABNORMAL, **_P),
    Concept(("necrotic core", "necrosis"), SCT.Necrosis, ABNORMAL, **_P),
    Concept(("pleural effusion",), SCT.PleuralEffusion, ABNORMAL, **_P),
    # Words for a kind rather than a structure ("the lesion inside it", "the vessel alongside it").
    Concept(("lesion",), SCT.Lesion, ABNORMAL, **_P),
    Concept(("nodule",), SCT.Nodule, ABNORMAL, **_P),
    Concept(("tumor", "neoplasm"), SCT.Neoplasm, ABNORMAL, **_P),
    Concept(("cyst",), SCT.Cyst, ABNORMAL, **_P),
    Concept(("effusion",), SCT.Effusion, ABNORMAL, **_P),
    Concept(("organ",), SCT.Organ, **_P),
    Concept(("vessel", "blood vessel"), SCT.BloodVessel, **_P),
    Concept(("artery",), SCT.Artery, **_P),
    Concept(("vein",), SCT.Vein, **_P),
    Concept(("muscle",), SCT.Muscle, **_P),
    Concept(("bone",), SCT.Bone, **_P),
    Concept(("atrium",), SCT.Atrium),
    # Real CT slices (model/data/real, TotalSegmentator / AMOS labels).
    Concept(("colon",), SCT.Colon),
    Concept(("femur",), SCT.Femur, **_P),
    Concept(("hip",), SCT.Hip, **_P),
    Concept(("hip bone", "pelvic bone", "innominate bone"), _local("MRA103", "Hip bone"), **_P),
    Concept(("rib",), SCT.Rib, **_P),
    Concept(("gluteus maximus", "gluteus maximus muscle"), _local("MRA104", "Gluteus maximus muscle"), **_P),
    Concept(("erector spinae", "erector spinae muscle", "autochthon", "autochthonous back muscle",
             "autochthonous muscle"), SCT.ErectorSpinaeMuscle, **_P),
    Concept(("left atrium", "left heart atrium", "heart atrium left"), SCT.LeftAtrium),
    Concept(("right atrium", "right heart atrium", "heart atrium right"), SCT.RightAtrium),
    Concept(("left ventricle", "left heart ventricle", "heart ventricle left"), SCT.LeftVentricle),
    Concept(("right ventricle", "right heart ventricle", "heart ventricle right"), SCT.RightVentricle),
    Concept(("myocardium", "heart myocardium", "heart muscle", "cardiac muscle"), SCT.CardiacMuscle),
    Concept(("upper lobe", "upper lobe of the lung", "lung upper lobe", "upper lung lobe"), SCT.UpperLobeOfLung,
            **_P),
    Concept(("lower lobe", "lower lobe of the lung", "lung lower lobe", "lower lung lobe"), SCT.LowerLobeOfLung,
            **_P),
    Concept(("middle lobe", "middle lobe of the right lung", "lung middle lobe", "right middle lobe"),
            SCT.MiddleLobeOfRightLung),
    *(Concept((f"t{n} vertebra", f"vertebra t{n}", f"vertebrae t{n}"), getattr(SCT, f"T{n}Vertebra"))
      for n in range(1, 13)),
    *(Concept((f"l{n} vertebra", f"vertebra l{n}", f"vertebrae l{n}"), getattr(SCT, f"L{n}Vertebra"))
      for n in range(1, 6)),
    # The real brain (AAL atlas): deep nuclei, limbic structures, lobes and groups.
    Concept(("caudate", "caudate nucleus"), SCT.CaudateNucleus, **_P),
    Concept(("putamen",), SCT.Putamen, **_P),
    Concept(("pallidum", "globus pallidus"), SCT.GlobusPallidus, **_P),
    Concept(("thalamus",), SCT.Thalamus, **_P),
    Concept(("hippocampus",), SCT.Hippocampus, **_P),
    Concept(("amygdala",), SCT.Amygdala, **_P),
    Concept(("insula", "insular cortex"), SCT.Insula, **_P),
    Concept(("cerebellum",), SCT.Cerebellum, **_P),
    Concept(("frontal lobe",), SCT.FrontalLobe, **_P),
    Concept(("temporal lobe",), SCT.TemporalLobe, **_P),
    Concept(("parietal lobe",), SCT.ParietalLobe, **_P),
    Concept(("occipital lobe",), SCT.OccipitalLobe, **_P),
    Concept(("limbic lobe",), SCT.LimbicLobe, **_P),
    Concept(("striatum", "corpus striatum"), SCT.CorpusStriatum, **_P),
    Concept(("cerebral cortex", "cortex"), SCT.CerebralCortex, **_P),
    Concept(("white matter",), SCT.CerebralWhiteMatter, **_P),
    Concept(("basal ganglia", "basal nuclei"), _local("MRA201", "Basal ganglia"), **_P),
    Concept(("lentiform nucleus", "lenticular nucleus"), _local("MRA202", "Lentiform nucleus"), **_P),
    Concept(("cerebellar hemisphere",), _local("MRA203", "Cerebellar hemisphere"), **_P),
    Concept(("vermis", "cerebellar vermis"), _local("MRA204", "Cerebellar vermis")),
    # AAL cortical regions (not in DICOM's dictionary).
    Concept(("precentral gyrus",), _local("MRA301", "Precentral gyrus"), **_P),
    Concept(("superior frontal gyrus",), _local("MRA302", "Superior frontal gyrus, dorsolateral"), **_P),
    Concept(("orbital part of the superior frontal gyrus", "superior frontal gyrus orbital part",
             "superior orbitofrontal gyrus"), _local("MRA303", "Superior frontal gyrus, orbital part"), **_P),
    Concept(("middle frontal gyrus",), _local("MRA304", "Middle frontal gyrus"), **_P),
    Concept(("orbital part of the middle frontal gyrus", "middle frontal gyrus orbital part",
             "middle orbitofrontal gyrus"), _local("MRA305", "Middle frontal gyrus, orbital part"), **_P),
    Concept(("opercular part of the inferior frontal gyrus", "inferior frontal gyrus opercular part",
             "pars opercularis"), _local("MRA306", "Inferior frontal gyrus, opercular part"), **_P),
    Concept(("triangular part of the inferior frontal gyrus", "inferior frontal gyrus triangular part",
             "pars triangularis"), _local("MRA307", "Inferior frontal gyrus, triangular part"), **_P),
    Concept(("orbital part of the inferior frontal gyrus", "inferior frontal gyrus orbital part",
             "pars orbitalis", "inferior orbitofrontal gyrus"),
            _local("MRA308", "Inferior frontal gyrus, orbital part"), **_P),
    Concept(("rolandic operculum",), _local("MRA309", "Rolandic operculum"), **_P),
    Concept(("supplementary motor area",), _local("MRA310", "Supplementary motor area"), **_P),
    Concept(("olfactory cortex",), _local("MRA311", "Olfactory cortex"), **_P),
    Concept(("medial superior frontal gyrus", "superior frontal gyrus medial part"),
            _local("MRA312", "Superior frontal gyrus, medial part"), **_P),
    Concept(("medial orbitofrontal gyrus", "medial orbitofrontal cortex", "superior frontal gyrus medial orbital part"),
            _local("MRA313", "Superior frontal gyrus, medial orbital part"), **_P),
    Concept(("gyrus rectus", "straight gyrus", "rectal gyrus"), _local("MRA314", "Gyrus rectus"), **_P),
    Concept(("anterior cingulate gyrus", "anterior cingulate cortex", "anterior cingulate"),
            _local("MRA315", "Anterior cingulate gyrus"), **_P),
    Concept(("middle cingulate gyrus", "median cingulate gyrus", "middle cingulate"),
            _local("MRA316", "Middle cingulate gyrus"), **_P),
    Concept(("posterior cingulate gyrus", "posterior cingulate cortex", "posterior cingulate"),
            _local("MRA317", "Posterior cingulate gyrus"), **_P),
    Concept(("parahippocampal gyrus",), _local("MRA318", "Parahippocampal gyrus"), **_P),
    Concept(("calcarine cortex", "calcarine fissure", "calcarine sulcus"),
            _local("MRA319", "Calcarine fissure and surrounding cortex"), **_P),
    Concept(("cuneus",), _local("MRA320", "Cuneus"), **_P),
    Concept(("lingual gyrus",), _local("MRA321", "Lingual gyrus"), **_P),
    Concept(("superior occipital gyrus",), _local("MRA322", "Superior occipital gyrus"), **_P),
    Concept(("middle occipital gyrus",), _local("MRA323", "Middle occipital gyrus"), **_P),
    Concept(("inferior occipital gyrus",), _local("MRA324", "Inferior occipital gyrus"), **_P),
    Concept(("fusiform gyrus",), _local("MRA325", "Fusiform gyrus"), **_P),
    Concept(("postcentral gyrus",), _local("MRA326", "Postcentral gyrus"), **_P),
    Concept(("superior parietal lobule", "superior parietal gyrus"),
            _local("MRA327", "Superior parietal gyrus"), **_P),
    Concept(("inferior parietal lobule", "inferior parietal gyrus"),
            _local("MRA328", "Inferior parietal gyrus"), **_P),
    Concept(("supramarginal gyrus",), _local("MRA329", "Supramarginal gyrus"), **_P),
    Concept(("angular gyrus",), _local("MRA330", "Angular gyrus"), **_P),
    Concept(("precuneus",), _local("MRA331", "Precuneus"), **_P),
    Concept(("paracentral lobule",), _local("MRA332", "Paracentral lobule"), **_P),
    Concept(("heschl gyrus", "heschl's gyrus", "transverse temporal gyrus"), _local("MRA333", "Heschl gyrus"), **_P),
    Concept(("superior temporal gyrus",), _local("MRA334", "Superior temporal gyrus"), **_P),
    Concept(("superior temporal pole", "temporal pole of the superior temporal gyrus"),
            _local("MRA335", "Temporal pole, superior temporal gyrus"), **_P),
    Concept(("middle temporal gyrus",), _local("MRA336", "Middle temporal gyrus"), **_P),
    Concept(("middle temporal pole", "temporal pole of the middle temporal gyrus"),
            _local("MRA337", "Temporal pole, middle temporal gyrus"), **_P),
    Concept(("inferior temporal gyrus",), _local("MRA338", "Inferior temporal gyrus"), **_P),
    Concept(("temporal pole",), _local("MRA339", "Temporal pole"), **_P),
    Concept(("cingulate gyrus", "cingulate cortex"), _local("MRA340", "Cingulate gyrus"), **_P),
    # AAL cerebellar lobules, named with Roman numerals as anatomy does, Arabic ones too.
    *(Concept((f"cerebellar {part}", f"cerebellar {arabic}", f"cerebellum {part}", f"cerebellum {arabic}"),
              _local(f"MRA4{i:02d}", f"Cerebellum, {part}"), **_P)
      for i, (part, arabic) in enumerate((
          ("crus I", "crus 1"), ("crus II", "crus 2"), ("lobule III", "lobule 3"), ("lobules IV-V", "lobules 4-5"),
          ("lobule VI", "lobule 6"), ("lobule VIIb", "lobule 7b"), ("lobule VIII", "lobule 8"),
          ("lobule IX", "lobule 9"), ("lobule X", "lobule 10")), start=1)),
)

# British spellings the questions may use, folded to the table's.
_SPELLINGS = {"tumour": "tumor", "oedema": "edema", "haemorrhage": "hemorrhage", "oesophagus": "esophagus",
              "grey": "gray", "centre": "center"}
_SIDES = {"left": LEFT, "right": RIGHT, "both": BILATERAL, "bilateral": BILATERAL}


def normalise(text: str) -> str:
    """Lower case, British spellings folded, apostrophes dropped, anything else not a letter or digit a space."""
    words = re.sub(r"[^a-z0-9]+", " ", text.lower().replace("'", "").replace("\u2019", "")).split()
    return " ".join(_SPELLINGS.get(w, w) for w in words)


def _patterns() -> list[tuple[re.Pattern, str, Concept]]:
    names: dict[str, Concept] = {}
    for concept in CONCEPTS:
        for name in map(normalise, concept.names):
            if names.setdefault(name, concept) is not concept:
                raise ValueError(f"name {name!r} is in the table twice")
    return [(re.compile(rf"\b{re.escape(n)}(?:s|es)?\b"), n, c) for n, c in names.items()]


_PATTERNS = _patterns()
_AFTER = re.compile(r"^ of the (left|right)\b")


def _find(text: str) -> CodedStructure | None:
    """The leftmost name in ``text`` (the longest of those starting there), coded, or None."""
    best = None
    for pattern, name, concept in _PATTERNS:
        m = pattern.search(text)
        if m and (best is None or (m.start(), -len(name)) < (best[0].start(), -len(best[1]))):
            best = m, name, concept
    if best is None:
        return None
    m, name, concept = best
    laterality = None
    if concept.paired:
        before = text[:m.start()].split()[-1:]
        after = _AFTER.match(text[m.end():])
        side = before[0] if before and before[0] in _SIDES else after.group(1) if after else None
        laterality = _SIDES.get(side)
    return CodedStructure(name, concept.category, concept.type, concept.region, laterality)


def concept_for(question: str, answer: str) -> CodedStructure:
    """The structure a round names: the answer's name if it has one, else the question's, else :data:`GENERIC`.

    Within a text the leftmost name wins, the longest of those starting there ("the left kidney lesion" is a
    kidney lesion, not a kidney): a question names its target first and what it relates it to after ("the
    vessel running alongside the aorta" asks for a vessel; "the lesion inside the liver" for a lesion).
    """
    return _find(normalise(answer)) or _find(normalise(question)) or GENERIC
