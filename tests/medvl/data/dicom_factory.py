"""Writes synthetic DICOM CT series for the reader tests (pydicom 3 Dataset / FileDataset API).

Every file carries recognisable fake patient identifiers (`PATIENT`), so tests can assert that none of
`IDENTIFYING_STRINGS` ever reaches an output. Geometry is given the DICOM way (ImageOrientationPatient,
PixelSpacing, one ImagePositionPatient per slice, LPS mm), so tests can check the reader against the
standard's formula rather than against a second copy of the reader's own maths.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLossless,
    JPEGLosslessSV1,
    MediaStorageDirectoryStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

PATIENT: dict[str, str] = {
    "PatientName": "Zanzibar^Quentilla",
    "PatientID": "PID-QX8675309",
    "PatientBirthDate": "19450704",
    "OtherPatientIDs": "ALT-ZK4242",
    "PatientAddress": "221B Bakerloo Crescent",
    "AccessionNumber": "ACC-WV77310",
}
# Substrings that must never appear in anything the readers produce (letters included, so that a UID or a
# number in the output cannot match by chance).
IDENTIFYING_STRINGS: tuple[str, ...] = (
    "Zanzibar", "Quentilla", "QX8675309", "19450704", "ZK4242", "Bakerloo", "WV77310"
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def stack_positions(n_slices: int, spacing: float, *, origin=(-20.0, -30.0, 40.0), orientation=AXIAL) -> np.ndarray:
    """ImagePositionPatient of `n_slices` evenly spaced slices along the orientation's normal (negative
    spacing: descending along the normal). Shape (n_slices, 3), LPS mm."""
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row_dir, col_dir)
    return np.asarray(origin, float)[None, :] + spacing * np.arange(n_slices)[:, None] * normal[None, :]


def _decimal_strings(values: Sequence[float]) -> list[DSfloat]:
    """Values as valid DICOM decimal strings (at most 16 characters, as a scanner writes them)."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    return meta


def make_slice(
    stored: np.ndarray,
    *,
    position: Sequence[float],
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    slope: float = 1.0,
    intercept: float = 0.0,
    series_uid: str,
    series_description: str = "CT TEST SERIES",
    instance_number: int = 1,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    patient: dict[str, str] | None = None,
    bits_stored: int = 16,
    sop_instance_uid: str | None = None,
) -> FileDataset:
    """One CT slice dataset, uncompressed (Explicit VR Little Endian).

    Args:
        stored: (rows, columns) stored values, int16 (signed) or uint16 (unsigned).
        position: ImagePositionPatient (LPS mm) of the first transmitted pixel.
        pixel_spacing: (row spacing, column spacing) mm, as DICOM orders it.
    """
    if stored.dtype not in (np.int16, np.uint16):
        raise ValueError(f"stored must be int16 or uint16, got {stored.dtype}")
    sop_instance = sop_instance_uid or generate_uid(entropy_srcs=[series_uid, str(instance_number), str(position)])
    ds = FileDataset("", Dataset(), file_meta=_file_meta(CTImageStorage, sop_instance, ExplicitVRLittleEndian),
                     preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance
    ds.Modality = "CT"
    ds.ImageType = list(image_type)
    for keyword, value in (PATIENT if patient is None else patient).items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = series_description
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = _decimal_strings(position)
    ds.ImageOrientationPatient = _decimal_strings(orientation)
    ds.PixelSpacing = _decimal_strings(pixel_spacing)
    ds.SliceThickness = 1.0
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


def write_series(
    folder: Path,
    stored: np.ndarray,
    positions: np.ndarray,
    *,
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    slope: float = 1.0,
    intercept: float = 0.0,
    series_uid: str | None = None,
    series_description: str = "CT TEST SERIES",
    transfer_syntax: str = ExplicitVRLittleEndian,
    preamble: bool = True,
    names: Sequence[str] | None = None,
    instance_numbers: Sequence[int] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write one series, one file per slice.

    By default file names are random (unrelated to the slice order) and InstanceNumbers are a shuffled,
    wrong order, so a reader that sorts by either gets the volume wrong.

    Args:
        folder: destination (created).
        stored: (Z, rows, columns) stored values, int16 or uint16; slice z is written at positions[z].
        positions: (Z, 3) ImagePositionPatient per slice, LPS mm.
        transfer_syntax: Explicit VR Little Endian, RLE Lossless, JPEG 2000 Lossless (via `ds.compress`),
            JPEG Lossless SV1 or JPEG Lossless process 14 (predictor `JPEG_LOSSLESS_PREDICTOR`), both via
            `encode_jpeg_lossless` below.
        preamble: False writes a bare dataset (no 128-byte preamble, no "DICM", no file meta, implicit VR).

    Returns:
        The written paths, in the order of `stored`'s slices.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = stored.shape[0]
    # Deterministic UIDs: a test's outputs are the same on every run.
    series_uid = series_uid or generate_uid(entropy_srcs=[folder.name, series_description, str(seed)])
    if names is None:
        names = [f"IM_{code:06d}.dcm" for code in rng.choice(10**6, size=n, replace=False)]
    if instance_numbers is None:
        instance_numbers = [int(v) + 1 for v in rng.permutation(n)]
    paths = []
    for z in range(n):
        ds = make_slice(stored[z], position=positions[z], orientation=orientation, pixel_spacing=pixel_spacing,
                        slope=slope, intercept=intercept, series_uid=series_uid,
                        series_description=series_description, instance_number=instance_numbers[z],
                        sop_instance_uid=generate_uid(entropy_srcs=[series_uid, "slice", str(z)]))
        if transfer_syntax in (JPEGLosslessSV1, JPEGLossless):
            bits = stored[z].view(np.uint16)  # JPEG codes the stored bit pattern as unsigned samples
            predictor = 1 if transfer_syntax == JPEGLosslessSV1 else JPEG_LOSSLESS_PREDICTOR
            ds.PixelData = encapsulate([encode_jpeg_lossless(bits, precision=16, predictor=predictor)])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        elif transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, generate_instance_uid=False)
        path = folder / names[z]
        if preamble:
            ds.save_as(path, enforce_file_format=True)
        else:
            ds.preamble = None
            ds.file_meta = FileMetaDataset()
            dcmwrite(path, ds, implicit_vr=True, little_endian=True)
        paths.append(path)
    return paths


def write_dicomdir_like(path: Path) -> Path:
    """A DICOMDIR-style file: Media Storage Directory SOP class, a directory record sequence, no pixels."""
    ds = FileDataset("", Dataset(), file_meta=_file_meta(MediaStorageDirectoryStorage,
                                                         generate_uid(entropy_srcs=[str(path)]),
                                                         ExplicitVRLittleEndian), preamble=b"\0" * 128)
    ds.FileSetID = "TESTSET"
    ds.DirectoryRecordSequence = []
    ds.PatientID = PATIENT["PatientID"]
    ds.save_as(path, enforce_file_format=True)
    return path


# Predictor used for the general JPEG Lossless (process 14) syntax: one that mixes three neighbours, unlike SV1.
JPEG_LOSSLESS_PREDICTOR = 6


def encode_jpeg_lossless(samples: np.ndarray, precision: int = 16, predictor: int = 1) -> bytes:
    """Minimal JPEG lossless encoder (ITU-T T.81 process 14, one component, Huffman coded).

    pydicom has no encoder for the JPEG lossless transfer syntaxes and none is installed here; the tests
    need real JPEG-lossless data to exercise the decoding path, so this writes a conformant codestream with
    a fixed Huffman table (all 17 difference categories coded on 5 bits). The tests check that it
    round-trips through libjpeg (pylibjpeg-libjpeg), an independent decoder.

    Args:
        samples: (rows, columns) unsigned samples (< 2**precision).
        precision: sample precision P in bits (2..16).
        predictor: selection value 1..7 (T.81 Table H.1); 1 (left neighbour) is the "SV1" syntax.

    Shapes:
        samples: (rows, columns).
    """
    if predictor not in range(1, 8):
        raise ValueError(f"predictor must be a selection value 1..7, got {predictor}")
    samples = np.asarray(samples).astype(np.int64)
    rows, columns = samples.shape
    # Prediction (T.81 H.1.2.1): 2**(P-1) for the first sample, left (Ra) along the first line,
    # above (Rb) for the first sample of every other line, the selected predictor elsewhere.
    ra, rb, rc = samples[1:, :-1], samples[:-1, 1:], samples[:-1, :-1]  # left, above, above-left
    interior = {
        1: ra, 2: rb, 3: rc, 4: ra + rb - rc, 5: ra + ((rb - rc) >> 1), 6: rb + ((ra - rc) >> 1), 7: (ra + rb) >> 1,
    }[predictor]
    predicted = np.empty_like(samples)
    predicted[0, 0] = 1 << (precision - 1)
    predicted[0, 1:] = samples[0, :-1]
    predicted[1:, 0] = samples[:-1, 0]
    predicted[1:, 1:] = interior
    diffs = (samples - predicted) % 65536  # differences are taken modulo 2**16 ...
    diffs = np.where(diffs >= 32768, diffs - 65536, diffs)  # ... and read as two's complement

    bits: list[str] = []
    for diff in diffs.ravel().tolist():
        category = 16 if diff == -32768 else abs(diff).bit_length()
        bits.append(format(category, "05b"))  # Huffman code of category c is c on 5 bits (canonical table)
        if 0 < category < 16:
            extra = diff if diff > 0 else diff - 1 + (1 << category)  # negative: low bits of diff - 1
            bits.append(format(extra, f"0{category}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)  # pad the last byte with 1-bits
    entropy = bytearray()
    for start in range(0, len(stream), 8):
        byte = int(stream[start:start + 8], 2)
        entropy.append(byte)
        if byte == 0xFF:
            entropy.append(0x00)  # byte stuffing

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    huffman_counts = bytes([0, 0, 0, 0, 17] + [0] * 11)  # 17 codes of length 5
    dht = segment(0xC4, bytes([0x00]) + huffman_counts + bytes(range(17)))
    sof3 = segment(0xC3, bytes([precision]) + rows.to_bytes(2, "big") + columns.to_bytes(2, "big")
                   + bytes([1, 1, 0x11, 0]))
    sos = segment(0xDA, bytes([1, 1, 0x00, predictor, 0, 0]))  # Ns=1, Cs=1, Td/Ta=0, Ss=predictor, Se=0, Ah/Al=0
    return b"\xff\xd8" + dht + sof3 + sos + bytes(entropy) + b"\xff\xd9"
