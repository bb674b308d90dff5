"""Radiology reports for demo cases, in the style of CT-RATE: a findings section of short declarative
sentences (positives with measurements, negated normal statements for the absent findings), then an
impression that lists the positives or says the study is normal.

Phrasing sets. Every template key in `PHRASINGS` has two disjoint lists of phrasings:
    "train": used by the train and val splits (and by every split when phrasings are not held out);
    "test":  used only by the test split when the dataset is built with `holdout_phrasings=True`,
             so a model is scored on sentences it never saw (language generalisation).
`phrasing_set="all"` draws from both lists. Template keys:
    <finding>/positive (or liver lesion/single|multiple, pleural effusion/unilateral|bilateral),
    <finding>/negative, <finding>/impression (effusion: impression_unilateral|impression_bilateral),
    impression/normal, technique/<contrast phase>, context/<airway|mediastinum|heart|bones>.
Context sentences (airways, mediastinum, heart, bones) describe phantom anatomy that never varies, so
they are true but carry no label; they are left out for real CT, whose status is unknown.

Template fields: {a}/{A} ("a"/"an" for the size that follows), {size} (mm, integer), {size_cm} (cm, one
decimal), {density}/{Density}, {count}/{Count} (a number word), {side}/{Side}, {lobe}, {s} (plural suffix).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medvl.data.demo.findings import FINDING_NAMES, Finding

PHRASING_SETS = ("train", "test", "all")

PHRASINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "liver lesion/single": {
        "train": (
            "{A} {size} mm {density} lesion is observed in the liver.",
            "There is a {density} lesion measuring {size} mm in the liver parenchyma.",
            "A {density} space-occupying lesion of {size} mm in diameter was detected in the liver.",
        ),
        "test": (
            "The liver contains {a} {size} mm {density} focal lesion.",
            "A focal {density} liver lesion measuring {size} mm is seen.",
        ),
    },
    "liver lesion/multiple": {
        "train": (
            "{Count} {density} lesions are observed in the liver, the largest measuring {size} mm.",
            "There are {count} {density} lesions in the liver parenchyma, the largest {size} mm in diameter.",
            "{Count} {density} space-occupying lesions were detected in the liver, up to {size} mm.",
        ),
        "test": (
            "The liver contains {count} {density} focal lesions, the biggest being {size} mm.",
            "{Count} focal {density} hepatic lesions are seen, measuring up to {size} mm.",
        ),
    },
    "liver lesion/negative": {
        "train": (
            "No space-occupying lesion was detected in the liver.",
            "The liver parenchyma is homogeneous and no focal lesion is seen.",
            "No focal liver lesion was observed.",
        ),
        "test": (
            "The liver shows no focal mass or lesion.",
            "No hepatic lesion is identified.",
        ),
    },
    "liver lesion/impression": {
        "train": ("{Density} liver lesion{s}, the largest {size} mm.", "{Density} lesion{s} in the liver."),
        "test": ("Focal {density} hepatic lesion{s} (up to {size} mm).",),
    },
    "kidney cyst/positive": {
        "train": (
            "{A} {size} mm simple cyst is observed in the {side} kidney.",
            "There is a cortical cyst measuring {size} mm in the {side} kidney.",
            "{A} {size} mm hypodense cystic lesion was detected in the {side} kidney.",
        ),
        "test": (
            "The {side} kidney contains {a} {size} mm cyst.",
            "A simple renal cyst of {size} mm is seen on the {side}.",
        ),
    },
    "kidney cyst/negative": {
        "train": (
            "No renal cyst or solid mass was detected.",
            "Both kidneys are normal with no cystic or solid lesion.",
            "No cystic lesion was observed in either kidney.",
        ),
        "test": ("The kidneys show no cysts or masses.", "No renal cystic lesion is identified."),
    },
    "kidney cyst/impression": {
        "train": ("{Side} renal cyst.", "Simple cyst in the {side} kidney."),
        "test": ("Cystic lesion of the {side} kidney ({size} mm).",),
    },
    "lung nodule/positive": {
        "train": (
            "{A} {size} mm nodule is observed in the {lobe} lobe of the {side} lung.",
            "There is a solid nodule measuring {size} mm in the {side} lung {lobe} lobe.",
            "{A} {size} mm diameter nodular lesion was detected in the {lobe} lobe of the {side} lung.",
        ),
        "test": (
            "The {side} {lobe} lobe contains {a} {size} mm solid nodule.",
            "{A} {size} mm solid pulmonary nodule is seen in the {side} {lobe} lobe.",
        ),
    },
    "lung nodule/negative": {
        "train": (
            "No nodular lesion was detected in the lung parenchyma.",
            "No pulmonary nodule or mass is observed in either lung.",
            "Both lungs are free of nodules.",
        ),
        "test": ("No nodules are identified in the lungs.", "The lung parenchyma shows no nodular lesion."),
    },
    "lung nodule/impression": {
        "train": ("{size} mm nodule in the {side} lung {lobe} lobe.", "{Side} {lobe} lobe pulmonary nodule."),
        "test": ("Solid pulmonary nodule, {side} {lobe} lobe ({size} mm).",),
    },
    "pleural effusion/unilateral": {
        "train": (
            "A {side}-sided pleural effusion measuring {size} mm in its thickest part is observed.",
            "There is {side} pleural effusion with a maximum thickness of {size} mm.",
            "Pleural effusion reaching {size} mm in thickness was detected on the {side}.",
        ),
        "test": (
            "The {side} pleural space contains fluid up to {size} mm thick.",
            "Fluid is seen in the {side} pleural space, {size} mm at its deepest.",
        ),
    },
    "pleural effusion/bilateral": {
        "train": (
            "Bilateral pleural effusion is observed, measuring up to {size} mm in thickness.",
            "There is bilateral pleural effusion with a maximum thickness of {size} mm.",
            "Pleural effusion reaching {size} mm in thickness was detected on both sides.",
        ),
        "test": (
            "Both pleural spaces contain fluid up to {size} mm thick.",
            "Fluid is seen in both pleural spaces, {size} mm at its deepest.",
        ),
    },
    "pleural effusion/negative": {
        "train": (
            "No pleural effusion was detected.",
            "Pleural effusion-thickening was not observed.",
            "There is no pleural effusion on either side.",
        ),
        "test": ("The pleural spaces are clear of fluid.", "No fluid is seen in either pleural space."),
    },
    "pleural effusion/impression_unilateral": {
        "train": ("{Side} pleural effusion.", "{Side}-sided pleural effusion ({size} mm)."),
        "test": ("Fluid in the {side} pleural space.",),
    },
    "pleural effusion/impression_bilateral": {
        "train": ("Bilateral pleural effusion.", "Bilateral pleural effusion, up to {size} mm."),
        "test": ("Fluid in both pleural spaces.",),
    },
    "splenomegaly/positive": {
        "train": (
            "The spleen is enlarged, measuring {size_cm} cm in craniocaudal length.",
            "Splenomegaly is observed with a craniocaudal length of {size_cm} cm.",
            "The spleen is larger than normal ({size_cm} cm in length).",
        ),
        "test": (
            "An enlarged spleen of {size_cm} cm in craniocaudal extent is seen.",
            "Splenic size is increased, {size_cm} cm craniocaudally.",
        ),
    },
    "splenomegaly/negative": {
        "train": (
            "The spleen is of normal size.",
            "The contour, size and parenchymal density of the spleen are normal.",
            "Spleen dimensions are within normal limits.",
        ),
        "test": ("No splenomegaly is seen.", "The spleen is not enlarged."),
    },
    "splenomegaly/impression": {
        "train": ("Splenomegaly.", "Enlarged spleen ({size_cm} cm)."),
        "test": ("Increased splenic size.",),
    },
    "arterial wall calcification/positive": {
        "train": (
            "Calcified atherosclerotic plaques are observed in the wall of the aorta.",
            "There are atherosclerotic calcifications in the aortic wall.",
            "Calcific plaques were detected along the aortic wall.",
        ),
        "test": ("The aortic wall shows calcified plaques.", "Aortic wall calcification is present."),
    },
    "arterial wall calcification/negative": {
        "train": (
            "No calcified plaque was observed in the aortic wall.",
            "The aortic wall shows no atherosclerotic calcification.",
            "Thoracic aorta diameter is normal and no wall calcification is seen.",
        ),
        "test": ("No aortic calcification is identified.", "There is no calcification of the aortic wall."),
    },
    "arterial wall calcification/impression": {
        "train": ("Aortic atherosclerotic calcification.", "Atherosclerotic changes of the aorta."),
        "test": ("Calcified aortic plaques.",),
    },
    "impression/normal": {
        "train": (
            "No acute abnormality.",
            "Thoracoabdominal CT examination within normal limits.",
            "No significant pathology was detected.",
        ),
        "test": ("Unremarkable CT of the chest and upper abdomen.", "Normal study."),
    },
    "technique/non-contrast": {
        "train": ("The examination was performed without intravenous contrast.", "Non-contrast CT examination."),
        "test": ("Images were acquired without contrast material.",),
    },
    "technique/arterial": {
        "train": (
            "The examination was performed in the arterial phase after intravenous contrast.",
            "Contrast-enhanced CT examination in the arterial phase.",
        ),
        "test": ("Images were acquired after contrast injection, arterial phase.",),
    },
    "context/airway": {
        "train": ("Trachea and both main bronchi are open.", "The trachea and main bronchi are patent."),
        "test": ("The central airways are patent.",),
    },
    "context/mediastinum": {
        "train": (
            "No enlarged lymph nodes were detected in the mediastinum.",
            "No mediastinal lymphadenopathy is seen.",
        ),
        "test": ("Mediastinal lymph nodes are not enlarged.",),
    },
    "context/heart": {
        "train": ("Heart contour and size are normal.", "The heart is normal in size."),
        "test": ("Cardiac size is within normal limits.",),
    },
    "context/bones": {
        "train": ("Vertebral corpus heights are preserved.", "Bone structures in the study area are normal."),
        "test": ("No destructive bone lesion is seen.",),
    },
}

# Report layout: the findings section goes region by region; sentences are shuffled within a region.
_THORAX = ("context/airway", "context/mediastinum", "context/heart", "arterial wall calcification",
           "lung nodule", "pleural effusion")
_ABDOMEN = ("liver lesion", "splenomegaly", "kidney cyst")
_BONES = ("context/bones",)
_IMPRESSION_ORDER = ("pleural effusion", "lung nodule", "liver lesion", "kidney cyst", "splenomegaly",
                     "arterial wall calcification")
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass
class Report:
    """A generated report.

    Attributes:
        findings_sentences: the findings section, in order.
        impression_sentences: the impression, in order.
        normal_sentences: finding name -> the negated statement used for it (absent findings only).
        phrasing_set: the phrasing set it was drawn from.
    """

    findings_sentences: list[str]
    impression_sentences: list[str]
    normal_sentences: dict[str, str] = field(default_factory=dict)
    phrasing_set: str = "all"

    @property
    def findings_text(self) -> str:
        return " ".join(self.findings_sentences)

    @property
    def impression_text(self) -> str:
        return " ".join(self.impression_sentences)

    @property
    def text(self) -> str:
        """The full report: "Findings: ...\\nImpression: ..."."""
        return f"Findings: {self.findings_text}\nImpression: {self.impression_text}"


def phrasings(key: str, phrasing_set: str) -> tuple[str, ...]:
    """The templates of `key` in `phrasing_set` ("train", "test" or "all" = both).

    Raises:
        ValueError: unknown key or phrasing set.
    """
    if key not in PHRASINGS:
        raise ValueError(f"unknown phrasing key {key!r}; known keys: {sorted(PHRASINGS)}")
    if phrasing_set not in PHRASING_SETS:
        raise ValueError(f"phrasing_set must be one of {PHRASING_SETS}, got {phrasing_set!r}")
    if phrasing_set == "all":
        return PHRASINGS[key]["train"] + PHRASINGS[key]["test"]
    return PHRASINGS[key][phrasing_set]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _indefinite_article(number: int) -> str:
    """ "an" before numbers read with a leading vowel sound (8, 11, 18, 80-89, 800-899, ...), else "a"."""
    return "an" if str(number).startswith("8") or number in (11, 18) else "a"


def _template_fields(finding: Finding) -> dict[str, str]:
    count = int(finding.attributes.get("count", 1))
    density = str(finding.attributes.get("density", ""))
    side = finding.side or ""
    size = int(math.floor(finding.size_mm + 0.5))  # round half up, as people read 20.5 mm
    return {
        "a": _indefinite_article(size),
        "A": _capitalise(_indefinite_article(size)),
        "size": str(size),
        "size_cm": f"{finding.size_mm / 10.0:.1f}",
        "density": density,
        "Density": _capitalise(density),
        "count": _NUMBER_WORDS.get(count, str(count)),
        "Count": _capitalise(_NUMBER_WORDS.get(count, str(count))),
        "side": side,
        "Side": _capitalise(side),
        "lobe": finding.lobe or "",
        "s": "s" if count > 1 else "",
    }


def _finding_keys(finding: Finding) -> tuple[str, str]:
    """(findings-section key, impression key) of a positive finding."""
    if finding.name == "liver lesion":
        single = int(finding.attributes.get("count", 1)) == 1
        return ("liver lesion/single" if single else "liver lesion/multiple"), "liver lesion/impression"
    if finding.name == "pleural effusion":
        kind = "bilateral" if finding.side == "bilateral" else "unilateral"
        return f"pleural effusion/{kind}", f"pleural effusion/impression_{kind}"
    return f"{finding.name}/positive", f"{finding.name}/impression"


def write_report(
    findings: list[Finding],
    labels: dict[str, int],
    rng: np.random.Generator,
    *,
    phrasing_set: str = "all",
    contrast_phase: str | None = None,
    include_context: bool = True,
) -> Report:
    """Write the report of one case and set each finding's `sentence` and `impression`.

    Args:
        findings: the inserted findings (their names must be positive in `labels`).
        labels: finding name -> 0/1 for every finding the case was evaluated for; a 0 gets a negated
            statement, a name missing from `labels` gets no statement at all (unknown).
        rng: the case's report generator (phrasing choice and sentence order).
        phrasing_set: "train", "test" or "all" (see the module docstring).
        contrast_phase: "non-contrast" / "arterial" adds a technique sentence; None (unknown) adds none.
        include_context: add the label-free context sentences (true for phantoms only).

    Raises:
        ValueError: a finding missing from or negative in `labels`, an unknown label name, or a bad
            `phrasing_set` / `contrast_phase`.
    """
    unknown = sorted(set(labels) - set(FINDING_NAMES))
    if unknown:
        raise ValueError(f"unknown finding names in labels: {unknown}; known: {list(FINDING_NAMES)}")
    inconsistent = sorted({f.name for f in findings if labels.get(f.name) != 1})
    if inconsistent:
        raise ValueError(f"findings {inconsistent} are present but not labelled 1 in {labels}")
    if contrast_phase is not None and f"technique/{contrast_phase}" not in PHRASINGS:
        raise ValueError(f"contrast_phase must be None, 'non-contrast' or 'arterial', got {contrast_phase!r}")

    def pick(key: str, values: dict[str, str] | None = None) -> str:
        options = phrasings(key, phrasing_set)
        return options[int(rng.integers(len(options)))].format(**(values or {}))

    by_slot: dict[str, list[str]] = {}
    for finding in findings:
        sentence_key, impression_key = _finding_keys(finding)
        values = _template_fields(finding)
        finding.sentence = pick(sentence_key, values)
        finding.impression = _capitalise(pick(impression_key, values))
        by_slot.setdefault(finding.name, []).append(finding.sentence)
    normal_sentences = {}
    for name in FINDING_NAMES:
        if labels.get(name) == 0:
            normal_sentences[name] = pick(f"{name}/negative")
            by_slot[name] = [normal_sentences[name]]
    if include_context:
        for key in (*_THORAX, *_BONES):
            if key.startswith("context/") and rng.random() < 0.75:
                by_slot[key] = [pick(key)]

    sentences = [pick(f"technique/{contrast_phase}")] if contrast_phase is not None else []
    for region in (_THORAX, _ABDOMEN, _BONES):
        region_sentences = [s for slot in region for s in by_slot.get(slot, [])]
        if rng.random() < 0.5:  # "shuffled somewhat": half of the regions keep the usual order
            region_sentences = [region_sentences[i] for i in rng.permutation(len(region_sentences))]
        sentences.extend(region_sentences)

    impression = [f.impression for name in _IMPRESSION_ORDER for f in findings if f.name == name]
    if not impression:
        impression = [pick("impression/normal")]
    return Report(sentences, impression, normal_sentences, phrasing_set)
