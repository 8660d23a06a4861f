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

CONCEPTS: tuple[Concept, ...] = (
    # Phantom scenes (model/data/phantoms): CT abdomen and chest, MR brain, chest X-ray, thyroid US.
    Concept(("liver",), SCT.Liver),
    Concept(("spleen",), SCT.Spleen),
    Concept(("stomach",), SCT.Stomach),
    Concept(("gallbladder", "gall bladder"), SCT.Gallbladder),
    Concept(("kidney",), SCT.Kidney, paired=True),
    Concept(("renal pelvis",), SCT.RenalPelvis, paired=True),
    Concept(("aorta",), SCT.Aorta),
    Concept(("inferior vena cava", "ivc"), SCT.InferiorVenaCava),
    Concept(("heart",), SCT.Heart),
    Concept(("lung",), SCT.Lung, paired=True),
    Concept(("trachea",), SCT.Trachea),
    Concept(("skull",), SCT.Skull),
    Concept(("brain",), SCT.Brain),
    Concept(("cerebral hemisphere", "hemisphere"), SCT.CerebralHemisphere, paired=True),
    Concept(("lateral ventricle",), SCT.LateralVentricle, paired=True),
    Concept(("thyroid isthmus", "isthmus of the thyroid"), SCT.ThyroidIsthmus),
    Concept(("thyroid", "thyroid gland"), SCT.Thyroid),
    Concept(("thyroid lobe", "lobe of the thyroid"), SCT.LobeOfThyroid, paired=True),
    Concept(("carotid artery", "carotid"), SCT.CarotidArtery, paired=True),
    Concept(("jugular vein", "internal jugular vein"), SCT.InternalJugularVein, paired=True),
    Concept(("clavicle",), SCT.Clavicle, paired=True),
    Concept(("vertebra", "vertebrae", "vertebral body"), SCT.Vertebra),
    Concept(("spinal canal", "vertebral canal"), SCT.VertebralCanal),
    Concept(("psoas muscle", "psoas"), _local("MRA101", "Psoas muscle"), paired=True),
    Concept(("subcutaneous fat", "subcutaneous tissue"), SCT.SubcutaneousTissue, TISSUE),
    # Phantom lesions: the morphology, in the organ it lies in.
    Concept(("liver lesion", "hepatic lesion", "lesion of the liver"), SCT.Lesion, ABNORMAL, SCT.Liver),
    Concept(("kidney lesion", "renal lesion", "lesion of the kidney"), SCT.Lesion, ABNORMAL, SCT.Kidney, paired=True),
    Concept(("lung nodule", "pulmonary nodule"), SCT.Nodule, ABNORMAL, SCT.Lung, paired=True),
    Concept(("thyroid nodule",), SCT.Nodule, ABNORMAL, SCT.Thyroid, paired=True),
    Concept(("brain tumor", "brain neoplasm"), SCT.Neoplasm, ABNORMAL, SCT.Brain, paired=True),
    Concept(("tumor core",), _local("MRA102", "Tumor core"), ABNORMAL, paired=True),
    Concept(("necrotic core", "necrosis"), SCT.Necrosis, ABNORMAL, paired=True),
    Concept(("pleural effusion",), SCT.PleuralEffusion, ABNORMAL, paired=True),
    # Words for a kind rather than a structure ("the lesion inside it", "the vessel alongside it").
    Concept(("lesion",), SCT.Lesion, ABNORMAL, paired=True),
    Concept(("nodule",), SCT.Nodule, ABNORMAL, paired=True),
    Concept(("tumor", "neoplasm"), SCT.Neoplasm, ABNORMAL, paired=True),
    Concept(("cyst",), SCT.Cyst, ABNORMAL, paired=True),
    Concept(("effusion",), SCT.Effusion, ABNORMAL, paired=True),
    Concept(("organ",), SCT.Organ, paired=True),
    Concept(("vessel", "blood vessel"), SCT.BloodVessel, paired=True),
    Concept(("artery",), SCT.Artery, paired=True),
    Concept(("vein",), SCT.Vein, paired=True),
    Concept(("muscle",), SCT.Muscle, paired=True),
    Concept(("bone",), SCT.Bone, paired=True),
    Concept(("atrium",), SCT.Atrium),
    # Real CT slices (model/data/real, TotalSegmentator / AMOS labels).
    Concept(("colon",), SCT.Colon),
    Concept(("femur",), SCT.Femur, paired=True),
    Concept(("hip",), SCT.Hip, paired=True),
    Concept(("hip bone", "pelvic bone", "innominate bone"), _local("MRA103", "Hip bone"), paired=True),
    Concept(("rib",), SCT.Rib, paired=True),
    Concept(("gluteus maximus", "gluteus maximus muscle"), _local("MRA104", "Gluteus maximus muscle"), paired=True),
    Concept(("erector spinae", "erector spinae muscle", "autochthon", "autochthonous back muscle",
             "autochthonous muscle"), SCT.ErectorSpinaeMuscle, paired=True),
    Concept(("left atrium", "left heart atrium", "heart atrium left"), SCT.LeftAtrium),
    Concept(("right atrium", "right heart atrium", "heart atrium right"), SCT.RightAtrium),
    Concept(("left ventricle", "left heart ventricle", "heart ventricle left"), SCT.LeftVentricle),
    Concept(("right ventricle", "right heart ventricle", "heart ventricle right"), SCT.RightVentricle),
    Concept(("myocardium", "heart myocardium", "heart muscle", "cardiac muscle"), SCT.CardiacMuscle),
    Concept(("upper lobe", "upper lobe of the lung", "lung upper lobe", "upper lung lobe"), SCT.UpperLobeOfLung,
            paired=True),
    Concept(("lower lobe", "lower lobe of the lung", "lung lower lobe", "lower lung lobe"), SCT.LowerLobeOfLung,
            paired=True),
    Concept(("middle lobe", "middle lobe of the right lung", "lung middle lobe", "right middle lobe"),
            SCT.MiddleLobeOfRightLung),
    *(Concept((f"t{n} vertebra", f"vertebra t{n}", f"vertebrae t{n}"), getattr(SCT, f"T{n}Vertebra"))
      for n in range(1, 13)),
    *(Concept((f"l{n} vertebra", f"vertebra l{n}", f"vertebrae l{n}"), getattr(SCT, f"L{n}Vertebra"))
      for n in range(1, 6)),
    # The real brain (AAL atlas): deep nuclei, limbic structures, lobes and groups.
    Concept(("caudate", "caudate nucleus"), SCT.CaudateNucleus, paired=True),
    Concept(("putamen",), SCT.Putamen, paired=True),
    Concept(("pallidum", "globus pallidus"), SCT.GlobusPallidus, paired=True),
    Concept(("thalamus",), SCT.Thalamus, paired=True),
    Concept(("hippocampus",), SCT.Hippocampus, paired=True),
    Concept(("amygdala",), SCT.Amygdala, paired=True),
    Concept(("insula", "insular cortex"), SCT.Insula, paired=True),
    Concept(("cerebellum",), SCT.Cerebellum, paired=True),
    Concept(("frontal lobe",), SCT.FrontalLobe, paired=True),
    Concept(("temporal lobe",), SCT.TemporalLobe, paired=True),
    Concept(("parietal lobe",), SCT.ParietalLobe, paired=True),
    Concept(("occipital lobe",), SCT.OccipitalLobe, paired=True),
    Concept(("limbic lobe",), SCT.LimbicLobe, paired=True),
    Concept(("striatum", "corpus striatum"), SCT.CorpusStriatum, paired=True),
    Concept(("cerebral cortex", "cortex"), SCT.CerebralCortex, paired=True),
    Concept(("white matter",), SCT.CerebralWhiteMatter, paired=True),
    Concept(("basal ganglia", "basal nuclei"), _local("MRA201", "Basal ganglia"), paired=True),
    Concept(("lentiform nucleus", "lenticular nucleus"), _local("MRA202", "Lentiform nucleus"), paired=True),
    Concept(("cerebellar hemisphere",), _local("MRA203", "Cerebellar hemisphere"), paired=True),
    Concept(("vermis", "cerebellar vermis"), _local("MRA204", "Cerebellar vermis")),
    # AAL cortical regions (not in DICOM's dictionary).
    Concept(("precentral gyrus",), _local("MRA301", "Precentral gyrus"), paired=True),
    Concept(("superior frontal gyrus",), _local("MRA302", "Superior frontal gyrus, dorsolateral"), paired=True),
    Concept(("orbital part of the superior frontal gyrus", "superior frontal gyrus orbital part",
             "superior orbitofrontal gyrus"), _local("MRA303", "Superior frontal gyrus, orbital part"), paired=True),
    Concept(("middle frontal gyrus",), _local("MRA304", "Middle frontal gyrus"), paired=True),
    Concept(("orbital part of the middle frontal gyrus", "middle frontal gyrus orbital part",
             "middle orbitofrontal gyrus"), _local("MRA305", "Middle frontal gyrus, orbital part"), paired=True),
    Concept(("opercular part of the inferior frontal gyrus", "inferior frontal gyrus opercular part",
             "pars opercularis"), _local("MRA306", "Inferior frontal gyrus, opercular part"), paired=True),
    Concept(("triangular part of the inferior frontal gyrus", "inferior frontal gyrus triangular part",
             "pars triangularis"), _local("MRA307", "Inferior frontal gyrus, triangular part"), paired=True),
    Concept(("orbital part of the inferior frontal gyrus", "inferior frontal gyrus orbital part",
             "pars orbitalis", "inferior orbitofrontal gyrus"),
            _local("MRA308", "Inferior frontal gyrus, orbital part"), paired=True),
    Concept(("rolandic operculum",), _local("MRA309", "Rolandic operculum"), paired=True),
    Concept(("supplementary motor area",), _local("MRA310", "Supplementary motor area"), paired=True),
    Concept(("olfactory cortex",), _local("MRA311", "Olfactory cortex"), paired=True),
    Concept(("medial superior frontal gyrus", "superior frontal gyrus medial part"),
            _local("MRA312", "Superior frontal gyrus, medial part"), paired=True),
    Concept(("medial orbitofrontal gyrus", "medial orbitofrontal cortex", "superior frontal gyrus medial orbital part"),
            _local("MRA313", "Superior frontal gyrus, medial orbital part"), paired=True),
    Concept(("gyrus rectus", "straight gyrus", "rectal gyrus"), _local("MRA314", "Gyrus rectus"), paired=True),
    Concept(("anterior cingulate gyrus", "anterior cingulate cortex", "anterior cingulate"),
            _local("MRA315", "Anterior cingulate gyrus"), paired=True),
    Concept(("middle cingulate gyrus", "median cingulate gyrus", "middle cingulate"),
            _local("MRA316", "Middle cingulate gyrus"), paired=True),
    Concept(("posterior cingulate gyrus", "posterior cingulate cortex", "posterior cingulate"),
            _local("MRA317", "Posterior cingulate gyrus"), paired=True),
    Concept(("parahippocampal gyrus",), _local("MRA318", "Parahippocampal gyrus"), paired=True),
    Concept(("calcarine cortex", "calcarine fissure", "calcarine sulcus"),
            _local("MRA319", "Calcarine fissure and surrounding cortex"), paired=True),
    Concept(("cuneus",), _local("MRA320", "Cuneus"), paired=True),
    Concept(("lingual gyrus",), _local("MRA321", "Lingual gyrus"), paired=True),
    Concept(("superior occipital gyrus",), _local("MRA322", "Superior occipital gyrus"), paired=True),
    Concept(("middle occipital gyrus",), _local("MRA323", "Middle occipital gyrus"), paired=True),
    Concept(("inferior occipital gyrus",), _local("MRA324", "Inferior occipital gyrus"), paired=True),
    Concept(("fusiform gyrus",), _local("MRA325", "Fusiform gyrus"), paired=True),
    Concept(("postcentral gyrus",), _local("MRA326", "Postcentral gyrus"), paired=True),
    Concept(("superior parietal lobule", "superior parietal gyrus"),
            _local("MRA327", "Superior parietal gyrus"), paired=True),
    Concept(("inferior parietal lobule", "inferior parietal gyrus"),
            _local("MRA328", "Inferior parietal gyrus"), paired=True),
    Concept(("supramarginal gyrus",), _local("MRA329", "Supramarginal gyrus"), paired=True),
    Concept(("angular gyrus",), _local("MRA330", "Angular gyrus"), paired=True),
    Concept(("precuneus",), _local("MRA331", "Precuneus"), paired=True),
    Concept(("paracentral lobule",), _local("MRA332", "Paracentral lobule"), paired=True),
    Concept(("heschl gyrus", "heschl's gyrus", "transverse temporal gyrus"), _local("MRA333", "Heschl gyrus"),
            paired=True),
    Concept(("superior temporal gyrus",), _local("MRA334", "Superior temporal gyrus"), paired=True),
    Concept(("superior temporal pole", "temporal pole of the superior temporal gyrus"),
            _local("MRA335", "Temporal pole, superior temporal gyrus"), paired=True),
    Concept(("middle temporal gyrus",), _local("MRA336", "Middle temporal gyrus"), paired=True),
    Concept(("middle temporal pole", "temporal pole of the middle temporal gyrus"),
            _local("MRA337", "Temporal pole, middle temporal gyrus"), paired=True),
    Concept(("inferior temporal gyrus",), _local("MRA338", "Inferior temporal gyrus"), paired=True),
    Concept(("temporal pole",), _local("MRA339", "Temporal pole"), paired=True),
    Concept(("cingulate gyrus", "cingulate cortex"), _local("MRA340", "Cingulate gyrus"), paired=True),
    # AAL cerebellar lobules, named with Roman numerals as anatomy does, Arabic ones too.
    *(Concept((f"cerebellar {part}", f"cerebellar {arabic}", f"cerebellum {part}", f"cerebellum {arabic}"),
              _local(f"MRA4{i:02d}", f"Cerebellum, {part}"), paired=True)
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
        laterality = _SIDES.get(side) if side is not None else None
    return CodedStructure(name, concept.category, concept.type, concept.region, laterality)


def concept_for(question: str, answer: str) -> CodedStructure:
    """The structure a round names: the answer's name if it has one, else the question's, else :data:`GENERIC`.

    Within a text the leftmost name wins, the longest of those starting there ("the left kidney lesion" is a
    kidney lesion, not a kidney): a question names its target first and what it relates it to after ("the
    vessel running alongside the aorta" asks for a vessel; "the lesion inside the liver" for a lesion).
    """
    return _find(normalise(answer)) or _find(normalise(question)) or GENERIC
