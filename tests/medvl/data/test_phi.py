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


def test_fragments_of_five_or_more_letters_or_digits_of_an_identifier_are_redacted() -> None:
    values = collect_identifier_values(_dataset())  # PatientID "PID-QX8675309", name "Zanzibar^Quentilla^Maria"
    assert scrub_text("CT 8675309 CHEST", values) == f"CT {REDACTED} CHEST"
    assert scrub_text("CT qx867 CHEST", values) == f"CT {REDACTED} CHEST"  # 5 characters: the rule's minimum
    assert scrub_text("series Quent_01", values) == f"series {REDACTED}_01"  # part of a name component
    assert scrub_text("id 67530 and 8675309x", values) == f"id {REDACTED} and {REDACTED}x"
    # kept: 4-character fragments, runs that straddle two words of an identifier, unrelated text, UIDs
    assert scrub_text("CT 8675 CHEST", values) == "CT 8675 CHEST"
    assert scrub_text("bar q and r^que", values) == "bar q and r^que"
    assert scrub_text("for questions", values) == "for questions"
    assert scrub_text("uid 1.2.8675309.4.5", values) == "uid 1.2.8675309.4.5"


def test_fragment_in_a_series_description_never_reaches_meta_errors_or_list_series(tmp_path) -> None:
    from medvl.data.dicom import list_series, read_dicom_series
    from medvl.data.volume import VolumeReadError
    from tests.medvl.data.dicom_factory import PATIENT, stack_positions, write_series

    fragment = PATIENT["PatientID"][-7:]  # "8675309": part of "PID-QX8675309", not the whole value
    description = f"CT {fragment} CHEST"
    write_series(tmp_path / "a", np.zeros((3, 2, 2), np.int16), stack_positions(3, 1.0), series_uid="1.2.3.61",
                 series_description=description)
    volume = read_dicom_series(tmp_path / "a")
    assert volume.meta["series_description"] == f"CT {REDACTED} CHEST"
    write_series(tmp_path / "a", np.zeros((2, 2, 2), np.int16), stack_positions(2, 1.0), series_uid="1.2.3.62",
                 seed=5)
    try:
        read_dicom_series(tmp_path / "a")  # two series: the error lists the descriptions
    except VolumeReadError as error:
        message = str(error)
    assert f"CT {REDACTED} CHEST" in message and fragment not in message
    assert fragment not in str(list_series(tmp_path / "a"))


def test_digit_fragments_inside_longer_numbers_are_kept() -> None:
    values = {"PID-QX8675309"}
    assert scrub_text("slice at 186753.5 mm", values) == "slice at 186753.5 mm"
    assert scrub_text("slice at 86753.5 mm", values) == f"slice at {REDACTED}.5 mm"
