"""Patient identifiers in DICOM headers, and helpers that keep them out of messages, metadata and files.

The readers never copy these attributes anywhere. As a second line of defence they collect the values
found in every file they read and blank those values out of anything they emit (error messages, warnings,
`Volume.meta`), because a value can leak through a free-text field or a file name (a series description or
a folder named after the patient).

What `scrub_text` blanks out (case-insensitive, DICOM UIDs excepted):
- every whole identifier value of at least `MIN_SCRUB_LENGTH` (3) characters, person names also as their
  components ("Doe^Jane", "Doe Jane", "Doe", "Jane");
- every run of at least `MIN_SUBSTRING_LENGTH` (5) letters / digits that also occurs inside one word (a run of
  letters and digits) of an identifier value: a description "CT 8675309" or "CT QX867" of the PatientID
  "PID-QX8675309" loses "8675309" / "QX867". Shorter fragments are kept (4 digits match too much unrelated
  text, e.g. years and sizes), runs never span a word boundary, so ordinary words that merely straddle
  two name parts are not cut, and a run of digits only is kept when it is part of a longer number (as for
  whole numeric values: "12345" is not cut out of "123456.0").
Overlapping or adjacent matches become one "[redacted]".
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

# Patient identity attributes of DICOM PS3.15 Annex E (Basic Application Level Confidentiality Profile),
# plus the accession number, which links the scan to a patient's record.
PATIENT_IDENTIFIER_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAge",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientTelecomInformation",
    "PatientMotherBirthName",
    "PatientInsurancePlanCodeSequence",
    "PatientPrimaryLanguageCodeSequence",
    "MedicalRecordLocator",
    "MilitaryRank",
    "BranchOfService",
    "CountryOfResidence",
    "RegionOfResidence",
    "PatientComments",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "AccessionNumber",
)

REDACTED = "[redacted]"

# Values shorter than this are not blanked out of text: replacing every "M" or "42" in a message would
# destroy it while protecting nothing (such short values identify no one on their own).
MIN_SCRUB_LENGTH = 3
# Runs of at least this many letters / digits inside a word of an identifier are blanked out wherever they occur.
MIN_SUBSTRING_LENGTH = 5
_WORD = re.compile(r"[^\W_]+")  # letters and digits (any script), no underscore


def _person_name_variants(text: str) -> Iterable[str]:
    """A person name as written ("Doe^Jane"), spaced ("Doe Jane"), and each component ("Doe", "Jane")."""
    yield text
    yield text.replace("^", " ")
    yield from (part for part in re.split(r"[\^=]", text) if part)


def _string_values(value: Any) -> Iterable[str]:
    """Yield every string inside a converted DICOM element value (multi-values, person names, sequences)."""
    if value is None:
        return
    if isinstance(value, Dataset):
        # Sequence items (e.g. OtherPatientIDsSequence): only their identifier attributes, not code values.
        yield from collect_identifier_values(value)
    elif isinstance(value, PersonName):
        yield from _person_name_variants(str(value))
    elif isinstance(value, (str, bytes)):
        yield value.decode("latin-1", "replace") if isinstance(value, bytes) else value
    elif isinstance(value, Iterable):
        for item in value:
            yield from _string_values(item)
    else:
        yield str(value)


def collect_identifier_values(ds: Dataset) -> set[str]:
    """The patient identifier values present in one dataset (top level and nested sequences).

    Args:
        ds: a pydicom dataset (file meta excluded: it holds no patient data).

    Returns:
        Every non-empty string value of the attributes in `PATIENT_IDENTIFIER_KEYWORDS` (decoded with the
        dataset's character set), with person names also split into their components.
    """
    values: set[str] = set()
    for keyword in PATIENT_IDENTIFIER_KEYWORDS:
        if keyword not in ds:
            continue
        try:
            found = list(_string_values(ds[keyword].value))
        except Exception:  # a malformed value (bad VR, wrong length) is skipped, never shown
            continue
        values.update(text.strip() for text in found if text and text.strip())
    return values


# DICOM UIDs (digits and dots, at least 4 components) are left as they are: they are needed to select a
# series, and a short numeric patient ID matching digits inside one would silently corrupt it.
_UID_PATTERN = re.compile(r"(?<![\d.])\d+(?:\.\d+){3,}(?![\d.])")


def _value_pattern(value: str) -> str:
    """Regex for one value: a plain substring, except that a value without letters (an ID number, a date)
    must not be part of a longer number ("1945" must not match inside "19450")."""
    escaped = re.escape(value)
    return escaped if any(ch.isalpha() for ch in value) else rf"(?<!\d){escaped}(?!\d)"


def _fold(text: str) -> str:
    """Lower-case, character by character (the result has `text`'s length, so positions carry over)."""
    return "".join(low if len(low := ch.lower()) == 1 else ch for ch in text)


def _substring_grams(values: Iterable[str]) -> set[str]:
    """Every `MIN_SUBSTRING_LENGTH`-character piece of every word of the values (folded)."""
    k = MIN_SUBSTRING_LENGTH
    return {word[i:i + k] for value in values for word in _WORD.findall(_fold(value)) for i in range(len(word) - k + 1)}


def _scrub_piece(text: str, pattern: re.Pattern[str] | None, grams: set[str]) -> str:
    """Blank out whole-value matches of `pattern` and runs made of `grams`, each covered run once."""
    covered = bytearray(len(text))
    if pattern is not None:
        for match in pattern.finditer(text):
            covered[match.start():match.end()] = b"\1" * (match.end() - match.start())
    k = MIN_SUBSTRING_LENGTH
    if grams:
        fragments = bytearray(len(text))
        for word in _WORD.finditer(_fold(text)):
            letters, start = word.group(), word.start()
            for i in range(len(letters) - k + 1):
                if letters[i:i + k] in grams:
                    fragments[start + i:start + i + k] = b"\1" * k
        for run in re.finditer(b"\1+", bytes(fragments)):
            begin, end = run.span()
            piece = text[begin:end]
            # Digits only: like a numeric value, it must not be part of a longer number ("12345" in "123456.0").
            inside_number = piece.isdigit() and (
                (begin > 0 and text[begin - 1].isdigit()) or (end < len(text) and text[end].isdigit())
            )
            if not inside_number:
                covered[begin:end] = b"\1" * (end - begin)
    if not any(covered):
        return text
    out, index = [], 0
    while index < len(text):
        if covered[index]:
            while index < len(text) and covered[index]:
                index += 1
            out.append(REDACTED)
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def scrub_text(text: str, identifier_values: Iterable[str]) -> str:
    """Replace the identifier values, and long fragments of them, in `text` by "[redacted]" (case-insensitive).

    The rule (module docstring): whole values of at least `MIN_SCRUB_LENGTH` characters, and runs of at least
    `MIN_SUBSTRING_LENGTH` letters / digits found inside a word of a value; DICOM UIDs are kept as they are.

    Args:
        text: any message.
        identifier_values: values from `collect_identifier_values`.

    Returns:
        The text with every covered run replaced by one "[redacted]".
    """
    values = sorted({v for v in identifier_values if len(v) >= MIN_SCRUB_LENGTH}, key=len, reverse=True)
    if not values:
        return text
    pattern = re.compile("|".join(_value_pattern(v) for v in values), flags=re.IGNORECASE)
    grams = _substring_grams(values)
    pieces, start = [], 0
    for uid in _UID_PATTERN.finditer(text):  # scrub the text between UIDs, keep the UIDs
        pieces += [_scrub_piece(text[start:uid.start()], pattern, grams), uid.group()]
        start = uid.end()
    pieces.append(_scrub_piece(text[start:], pattern, grams))
    return "".join(pieces)


def scrub(obj: Any, identifier_values: Iterable[str]) -> Any:
    """Return a copy of a JSON-like object (dicts, lists, tuples, strings) with identifiers removed.

    Keys named like a patient identifier attribute (`PatientName`, ...) are dropped; every string, key or
    value, goes through `scrub_text`. Other leaves (numbers, None, booleans) are returned unchanged.

    Args:
        obj: the object to clean, e.g. `Volume.meta` or a dict of DICOM header values.
        identifier_values: values from `collect_identifier_values`.
    """
    values = list(identifier_values)
    if isinstance(obj, str):
        return scrub_text(obj, values)
    if isinstance(obj, Mapping):
        return {
            scrub(key, values): scrub(value, values)
            for key, value in obj.items()
            if not (isinstance(key, str) and key in PATIENT_IDENTIFIER_KEYWORDS)
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(scrub(item, values) for item in obj)
    return obj
