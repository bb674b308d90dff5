"""Patient identifier collection and scrubbing."""
from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medvl.data.phi import REDACTED, collect_identifier_values, scrub, scrub_text
from tests.medvl.data.dicom_factory import make_slice


def _dataset() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Zanzibar^Quentilla^Maria"
    ds.PatientID = "PID-QX8675309"
    ds.PatientBirthDate = "19450704"
    ds.PatientSex = "F"  # not an identifier: not collected
    ds.SeriesDescription = "CT CHEST"  # not an identifier: not collected
    other = Dataset()
    other.PatientID = "ALT-ZK4242"
    other.TypeOfPatientID = "TEXT"  # a code inside the sequence item, not an identifier
    ds.OtherPatientIDsSequence = [other]
    return ds


def test_collect_identifier_values_includes_name_parts_and_sequence_items() -> None:
    values = collect_identifier_values(_dataset())
    assert {"Zanzibar^Quentilla^Maria", "Zanzibar Quentilla Maria", "Zanzibar", "Quentilla", "Maria"} <= values
    assert {"PID-QX8675309", "19450704", "ALT-ZK4242"} <= values
    assert not {"F", "CT CHEST", "TEXT"} & values


def test_scrub_text_is_case_insensitive_replaces_longest_first_and_ignores_short_values() -> None:
    values = {"Zanzibar^Quentilla", "Zanzibar", "Quentilla", "7"}
    text = "series of ZANZIBAR^QUENTILLA in /data/quentilla_7/"
    assert scrub_text(text, values) == f"series of {REDACTED} in /data/{REDACTED}_7/"
    assert scrub_text("nothing to do", set()) == "nothing to do"


def test_scrub_drops_identifier_keys_and_cleans_nested_strings() -> None:
    values = collect_identifier_values(_dataset())
    meta = {
        "PatientName": "anything",
        "series": [{"description": "CT pid-qx8675309 chest", "n": 3}],
        "skipped": ("Zanzibar.txt", None),
    }
    assert scrub(meta, values) == {
        "series": [{"description": f"CT {REDACTED} chest", "n": 3}],
        "skipped": (f"{REDACTED}.txt", None),
    }


def test_values_are_collected_from_a_file_with_multi_valued_ids(tmp_path) -> None:
    ds = make_slice(np.zeros((2, 2), np.int16), position=(0, 0, 0), series_uid="1.2.3",
                    patient={"PatientName": "Zanzibar^Quentilla", "OtherPatientIDs": "A-ZK4242\\B-ZK4343"})
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)

    values = collect_identifier_values(pydicom.dcmread(tmp_path / "x.dcm"))

    assert {"Zanzibar^Quentilla", "Zanzibar", "Quentilla", "A-ZK4242", "B-ZK4343"} <= values


def test_numeric_values_match_whole_numbers_only_and_uids_are_kept() -> None:
    values = {"12345", "19450704"}
    text = "series 1.2.840.12345.7 of 12345 born 19450704, slice at 123456.0 mm"
    assert scrub_text(text, values) == f"series 1.2.840.12345.7 of {REDACTED} born {REDACTED}, slice at 123456.0 mm"
