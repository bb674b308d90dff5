"""Tests of the demo CT dataset (medvl.data.demo): phantoms, findings, reports, build, reuse, real anatomy."""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvl.data.demo import build_demo_dataset, ensure_demo_dataset
from medvl.data.demo.__main__ import main as demo_main
from medvl.data.demo.build import INFO_NAME, MANIFEST_NAME, assign_splits, demo_build_args, make_phantom_case
from medvl.data.demo.findings import (
    FINDING_NAMES,
    Finding,
    InsertionContext,
    describe_splenomegaly,
    insert_aortic_calcification,
    insert_kidney_cyst,
    insert_liver_lesions,
    insert_lung_nodule,
    insert_pleural_effusion,
    sample_finding_plan,
)
from medvl.data.demo.phantom import LUNG_LOBES, ORGAN_LABELS, generate_phantom
from medvl.data.demo.real_anatomy import available_real_findings, load_real_anatomy
from medvl.data.demo.report_writer import PHRASINGS, _indefinite_article, phrasings, write_report

SMALL = {"num_cases": 8, "size": 32, "spacing_mm": 5.0, "seed": 0}


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def _sentences(text: str) -> list[str]:
    """Sentences of a demo report (its sentences end in '.' and start with a capital or a digit)."""
    body = text.replace("Findings: ", "").replace("\nImpression: ", " ")
    return [s for s in re.split(r"(?<=\.)\s+(?=[A-Z0-9])", body) if s]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "ds", progress=False, **SMALL)


@pytest.fixture(scope="module")
def small_rows(small_dataset) -> list[dict]:
    return _rows(small_dataset)


def _phantom_context(seed: int, splenomegaly: bool = False) -> InsertionContext:
    phantom = generate_phantom(32, 10.0, np.random.default_rng(seed), splenomegaly=splenomegaly)
    return InsertionContext(phantom.hu, phantom.organs, ORGAN_LABELS, (10.0, 10.0, 10.0),
                            np.zeros(phantom.hu.shape, dtype=np.uint8), anatomy_scale=phantom.anatomy_scale)


# ----------------------------------------------------------------------------------------------- phantom
def test_phantom_is_deterministic_for_a_seed():
    a = generate_phantom(32, 5.0, np.random.default_rng(7))
    b = generate_phantom(32, 5.0, np.random.default_rng(7))
    c = generate_phantom(32, 5.0, np.random.default_rng(8))
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.organs, b.organs)
    assert a.hu.shape == a.organs.shape == (32, 32, 32) and a.hu.dtype == np.float32 and a.organs.dtype == np.int16
    assert not np.array_equal(a.organs, c.organs)  # cases vary in shape


def test_phantom_contains_every_phantom_organ_and_ras_layout():
    phantom = generate_phantom(32, 10.0, np.random.default_rng(0))
    present = {name for name, label in ORGAN_LABELS.items() if (phantom.organs == label).any()}
    assert present == set(ORGAN_LABELS) - {"lung_middle_lobe_right"}  # the phantom has no middle lobe
    centre = {name: np.argwhere(phantom.organs == ORGAN_LABELS[name]).mean(axis=0) for name in present}
    # RAS voxel axes: i to the patient's right, j anterior, k superior.
    assert centre["liver"][0] > centre["spleen"][0]
    assert centre["kidney_right"][0] > centre["kidney_left"][0]
    assert centre["spine"][1] < centre["heart"][1]
    assert centre["lung_upper_lobe_left"][2] > centre["kidney_left"][2]
    np.testing.assert_allclose(np.diag(phantom.affine), [10.0, 10.0, 10.0, 1.0])


def test_anatomy_variation_scales_how_much_cases_differ():
    def organs(seed, variation):
        return generate_phantom(32, 10.0, np.random.default_rng(seed), anatomy_variation=variation).organs

    # 0: one fixed anatomy whatever the generator; 1 (default): every case its own shape; in between, less.
    np.testing.assert_array_equal(organs(1, 0.0), organs(2, 0.0))
    full = (organs(1, 1.0) != organs(2, 1.0)).mean()
    reduced = (organs(1, 0.2) != organs(2, 0.2)).mean()
    assert 0.0 < reduced < 0.5 * full
    np.testing.assert_array_equal(organs(3, 1.0), generate_phantom(32, 10.0, np.random.default_rng(3)).organs)
    with pytest.raises(ValueError, match="anatomy_variation"):
        generate_phantom(32, 10.0, np.random.default_rng(0), anatomy_variation=1.5)
    with pytest.raises(ValueError, match="anatomy_variation"):
        demo_build_args(anatomy_variation=-0.1)
    assert "anatomy_variation" not in demo_build_args()  # builds made before the option stay current
    assert demo_build_args(anatomy_variation=0.25)["anatomy_variation"] == 0.25


def test_lesion_scale_enlarges_only_the_focal_findings():
    focal = {"liver lesion", "kidney cyst", "lung nodule", "arterial wall calcification"}

    def cases(scale):
        return [make_phantom_case(i, seed=0, size=64, spacing_mm=5.0, split="train", holdout_phrasings=True,
                                  anatomy_variation=0.2, lesion_scale=scale) for i in range(12)]

    base, large = cases(1.0), cases(2.0)
    ratios, voxels = [], {1.0: 0, 2.0: 0}
    for a, b in zip(base, large):
        assert [f.name for f in a.findings] == [f.name for f in b.findings]  # same plan, same anatomy
        np.testing.assert_array_equal(a.organs, b.organs)
        for fa, fb in zip(a.findings, b.findings):
            if fa.name in focal:
                ratios.append(fb.size_mm / fa.size_mm)
                if " mm" in fb.sentence:  # reports state the new size (calcification sentences state none)
                    assert f"{int(np.floor(fb.size_mm + 0.5))} mm" in fb.sentence
                voxels[1.0] += int((a.finding_mask == fa.mask_id).sum())
                voxels[2.0] += int((b.finding_mask == fb.mask_id).sum())
            else:  # effusion and splenomegaly are already large: unchanged
                assert fa.size_mm == fb.size_mm
    assert len(ratios) >= 8
    assert np.median(ratios) > 1.5  # diameters about double (clipped by the room in small organs)
    assert voxels[2.0] > 3 * voxels[1.0]
    with pytest.raises(ValueError, match="lesion_scale"):
        demo_build_args(lesion_scale=0.0)
    with pytest.raises(ValueError, match="lesion_scale"):
        demo_build_args(lesion_scale=float("inf"))
    assert "lesion_scale" not in demo_build_args()  # builds made before the option stay current
    assert demo_build_args(lesion_scale=2)["lesion_scale"] == 2.0


def test_phantom_rejects_bad_grid():
    with pytest.raises(ValueError, match="size"):
        generate_phantom(8, 5.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="spacing"):
        generate_phantom(32, 0.0, np.random.default_rng(0))


def test_organ_hu_ranges_are_plausible(small_dataset, small_rows):
    lungs = [ORGAN_LABELS[name] for name in LUNG_LOBES]
    for row in small_rows:
        hu = np.asarray(nib.load(small_dataset.parent / row["volume"]).dataobj)
        organs = np.asarray(nib.load(small_dataset.parent / row["organ_mask"]).dataobj)
        clean = np.asarray(nib.load(small_dataset.parent / row["finding_mask"]).dataobj) == 0
        assert 40 <= np.median(hu[(organs == ORGAN_LABELS["liver"]) & clean]) <= 70
        assert np.median(hu[np.isin(organs, lungs) & clean]) < -700
        assert np.median(hu[organs == ORGAN_LABELS["spine"]]) > 300
        air = hu[organs == 0].astype(np.float64)  # outside the body
        assert np.median(air) < -900
        assert 5 < 1.4826 * np.median(np.abs(air - np.median(air))) < 30  # robust noise level ~10-20 HU


# ---------------------------------------------------------------------------------------------- findings
def _host_contrast(ctx: InsertionContext, finding: Finding, host: np.ndarray) -> float:
    """Mean HU inside the finding mask minus the median of the rest of its host."""
    lesion = ctx.finding_mask == finding.mask_id
    assert lesion.any()
    return float(ctx.hu[lesion].mean() - np.median(ctx.hu[host & ~lesion]))


def _assert_center_in_organ(ctx: InsertionContext, finding: Finding) -> None:
    assert ctx.organs[tuple(finding.center_vox)] == ORGAN_LABELS[finding.organ]
    assert ctx.finding_mask[tuple(finding.center_vox)] == finding.mask_id


def test_liver_lesion_is_inserted_inside_the_liver():
    ctx = _phantom_context(1)
    liver = ctx.organs == ORGAN_LABELS["liver"]
    finding = insert_liver_lesions(ctx, np.random.default_rng(0), mask_id=1)
    assert finding is not None and finding.name == "liver lesion" and finding.organ == "liver"
    _assert_center_in_organ(ctx, finding)
    contrast = _host_contrast(ctx, finding, liver)
    assert abs(contrast) > 20 and (contrast < 0) == (finding.attributes["density"] == "hypodense")
    assert not (ctx.finding_mask.astype(bool) & ~liver).any()  # painted only inside the liver
    assert finding.attributes["count"] == len(finding.attributes["instances"]) >= 1
    assert finding.size_mm >= ctx.min_diameter_mm - 1e-6


def test_kidney_cyst_and_lung_nodule_are_inserted_in_their_organs():
    ctx = _phantom_context(2)
    cyst = insert_kidney_cyst(ctx, np.random.default_rng(0), mask_id=1)
    assert cyst is not None and cyst.organ == f"kidney_{cyst.side}"
    _assert_center_in_organ(ctx, cyst)
    assert _host_contrast(ctx, cyst, ctx.organs == ORGAN_LABELS[cyst.organ]) < -10  # water vs kidney

    nodule = insert_lung_nodule(ctx, np.random.default_rng(0), mask_id=2)
    assert nodule is not None and LUNG_LOBES[nodule.organ] == (nodule.side, nodule.lobe)
    _assert_center_in_organ(ctx, nodule)
    assert _host_contrast(ctx, nodule, ctx.organs == ORGAN_LABELS[nodule.organ]) > 500  # solid vs air
    second = insert_lung_nodule(ctx, np.random.default_rng(0), mask_id=3, exclude_lobes=(nodule.organ,))
    assert second is not None and second.organ != nodule.organ


def test_pleural_effusion_is_dependent_fluid_in_the_lung_base():
    ctx = _phantom_context(3)
    lungs = np.isin(ctx.organs, [ORGAN_LABELS[name] for name in LUNG_LOBES])
    finding = insert_pleural_effusion(ctx, np.random.default_rng(0), mask_id=1)
    assert finding is not None and finding.organ in LUNG_LOBES
    _assert_center_in_organ(ctx, finding)
    fluid = ctx.finding_mask == 1
    assert (fluid <= lungs).all() and -5 < np.median(ctx.hu[fluid]) < 30
    lung_voxels, fluid_voxels = np.argwhere(lungs), np.argwhere(fluid)
    assert fluid_voxels[:, 1].mean() < lung_voxels[:, 1].mean()  # posterior (dependent)
    assert fluid_voxels[:, 2].mean() < lung_voxels[:, 2].mean()  # towards the lung base
    thickest = fluid.sum(axis=1).max() * ctx.spacing_mm[1]
    assert finding.size_mm == pytest.approx(thickest)


def test_aortic_calcification_and_splenomegaly():
    ctx = _phantom_context(4)
    aorta = ctx.organs == ORGAN_LABELS["aorta"]
    finding = insert_aortic_calcification(ctx, np.random.default_rng(0), mask_id=1)
    assert finding is not None and finding.organ == "aorta" and 3 <= finding.attributes["count"] <= 8
    _assert_center_in_organ(ctx, finding)
    assert ctx.hu[ctx.finding_mask == 1].max() > 500 and np.median(ctx.hu[aorta]) < 350

    normal, enlarged = _phantom_context(5), _phantom_context(5, splenomegaly=True)
    spleen = ORGAN_LABELS["spleen"]
    assert (enlarged.organs == spleen).sum() > 2 * (normal.organs == spleen).sum()
    normal_length = describe_splenomegaly(normal, np.random.default_rng(0), 1).size_mm
    enlarged_finding = describe_splenomegaly(enlarged, np.random.default_rng(0), 1)
    assert enlarged_finding.size_mm > 1.2 * normal_length
    _assert_center_in_organ(enlarged, enlarged_finding)


def test_finding_plan_prevalence_and_bad_arguments():
    rng = np.random.default_rng(0)
    plans = [sample_finding_plan(rng, FINDING_NAMES, 0.3) for _ in range(2000)]
    assert 0.26 < np.mean([not plan for plan in plans]) < 0.34
    assert all(set(plan) <= set(FINDING_NAMES) for plan in plans)
    assert sample_finding_plan(rng, ("liver lesion",), 0.0) == ["liver lesion"]
    with pytest.raises(ValueError, match="unknown finding"):
        sample_finding_plan(rng, ("fracture",))
    with pytest.raises(ValueError, match="normal_fraction"):
        sample_finding_plan(rng, FINDING_NAMES, 1.5)


# ----------------------------------------------------------------------------------------------- reports
def _render_all(phrasing_set: str) -> list[str]:
    values = [dict(a="a", A="A", size="12", size_cm="15.5", density="hypodense", Density="Hypodense", count="two",
                   Count="Two", side="left", Side="Left", lobe="upper", s="s"),
              dict(a="an", A="An", size="8", size_cm="9.0", density="hyperdense", Density="Hyperdense",
                   count="three", Count="Three", side="right", Side="Right", lobe="lower", s="")]
    return [template.format(**v) for key in PHRASINGS for template in phrasings(key, phrasing_set) for v in values]


def test_held_out_phrasings_are_disjoint_from_training_phrasings():
    train, test = _render_all("train"), _render_all("test")
    for key, sets in PHRASINGS.items():
        assert sets["train"] and sets["test"] and not set(sets["train"]) & set(sets["test"]), key
    leaks = [t for t in test if any(t in s for s in train)]
    assert not leaks
    assert set(phrasings("liver lesion/negative", "all")) == set(PHRASINGS["liver lesion/negative"]["train"]) | set(
        PHRASINGS["liver lesion/negative"]["test"])
    with pytest.raises(ValueError, match="phrasing_set"):
        phrasings("liver lesion/negative", "validation")


def test_report_states_positives_and_negates_negatives():
    finding = Finding("kidney cyst", "kidney_left", "left", None, 18.0, [1, 2, 3], 1, {"hu": 5.0})
    labels = {name: int(name == "kidney cyst") for name in FINDING_NAMES}
    report = write_report([finding], labels, np.random.default_rng(0), phrasing_set="train",
                          contrast_phase="arterial")
    assert "18 mm" in finding.sentence and "left" in finding.sentence and finding.sentence in report.text
    assert finding.impression in report.impression_text
    assert set(report.normal_sentences) == set(FINDING_NAMES) - {"kidney cyst"}
    for name, sentence in report.normal_sentences.items():
        assert sentence in PHRASINGS[f"{name}/negative"]["train"] and sentence in report.findings_text
    assert report.text.startswith("Findings: ") and "\nImpression: " in report.text
    normal = write_report([], {n: 0 for n in FINDING_NAMES}, np.random.default_rng(0), phrasing_set="test")
    assert normal.impression_sentences[0] in PHRASINGS["impression/normal"]["test"]
    with pytest.raises(ValueError, match="not labelled 1"):
        write_report([finding], {n: 0 for n in FINDING_NAMES}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="contrast_phase"):
        write_report([], {}, np.random.default_rng(0), contrast_phase="venous")


def test_report_articles_agree_with_the_number():
    assert [_indefinite_article(n) for n in (8, 11, 18, 80, 850, 1, 12, 28, 100)] == ["an"] * 5 + ["a"] * 4
    rng = np.random.default_rng(0)
    for size in (8.2, 11.0, 18.0, 12.0):
        for name, organ, side, lobe in (("lung nodule", "lung_upper_lobe_left", "left", "upper"),
                                        ("kidney cyst", "kidney_right", "right", None)):
            finding = Finding(name, organ, side, lobe, size, [0, 0, 0], 1)
            for _ in range(10):
                write_report([finding], {name: 1}, rng, phrasing_set="all", include_context=False)
                assert not re.search(r"\b[Aa] (8|11|18) mm|\b[Aa]n 12 mm", finding.sentence), finding.sentence


# ------------------------------------------------------------------------------------------------- build
def test_build_is_deterministic_for_a_seed(small_dataset, tmp_path):
    again = build_demo_dataset(tmp_path / "again", progress=False, **SMALL)
    assert again.read_text() == small_dataset.read_text()
    for row in _rows(again)[:3]:
        for key in ("volume", "organ_mask", "finding_mask"):
            a = np.asarray(nib.load(again.parent / row[key]).dataobj)
            b = np.asarray(nib.load(small_dataset.parent / row[key]).dataobj)
            np.testing.assert_array_equal(a, b)
    other = build_demo_dataset(tmp_path / "other", progress=False, **{**SMALL, "num_cases": 2, "seed": 1})
    first = _rows(other)[0]
    assert not np.array_equal(np.asarray(nib.load(other.parent / first["volume"]).dataobj),
                              np.asarray(nib.load(small_dataset.parent / _rows(small_dataset)[0]["volume"]).dataobj))


def test_manifest_is_valid_jsonl_with_relative_paths_and_ras_nifti(small_dataset, small_rows):
    assert len(small_rows) == SMALL["num_cases"]
    assert {r["split"] for r in small_rows} == {"train", "val", "test"}
    assert len({r["patient_id"] for r in small_rows}) == len(small_rows)
    for row in small_rows:
        assert set(row["labels"]) == set(FINDING_NAMES) and set(row["labels"].values()) <= {0, 1}
        assert row["organ_labels"] == ORGAN_LABELS
        for key in ("volume", "organ_mask", "finding_mask"):
            assert not Path(row[key]).is_absolute() and (small_dataset.parent / row[key]).is_file()
        image = nib.load(small_dataset.parent / row["volume"])
        assert image.shape == (32, 32, 32) and image.get_data_dtype() == np.int16
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        np.testing.assert_allclose(image.header.get_zooms(), (5.0, 5.0, 5.0))
        assert nib.load(small_dataset.parent / row["organ_mask"]).get_data_dtype() == np.int16
        for finding in row["findings"]:
            assert {"name", "organ", "side", "lobe", "size_mm", "center_vox", "sentence"} <= set(finding)
    info = json.loads((small_dataset.parent / INFO_NAME).read_text())
    assert info["args"]["num_cases"] == 8 and info["version"] >= 1
    assert "holdout_phrasings" in (small_dataset.parent / "README.txt").read_text()


def test_labels_match_the_report_and_the_volumes(small_dataset, small_rows):
    for row in small_rows:
        report = row["report"]
        positives = {f["name"] for f in row["findings"]}
        assert positives == {name for name, value in row["labels"].items() if value == 1}
        finding_mask = np.asarray(nib.load(small_dataset.parent / row["finding_mask"]).dataobj)
        organs = np.asarray(nib.load(small_dataset.parent / row["organ_mask"]).dataobj)
        for finding in row["findings"]:
            assert finding["sentence"] in report and finding["impression"] in report
            assert organs[tuple(finding["center_vox"])] == ORGAN_LABELS[finding["organ"]]
            assert finding_mask[tuple(finding["center_vox"])] == finding["mask_id"]
        for name, value in row["labels"].items():
            negations = phrasings(f"{name}/negative", "all")
            stated = [sentence for sentence in negations if sentence in report]
            assert stated == ([row["normal_sentences"][name]] if value == 0 else []), (name, report)


def test_test_split_sentences_never_occur_in_train_reports(small_rows):
    train_reports = [r["report"] for r in small_rows if r["split"] == "train"]
    test_rows = [r for r in small_rows if r["split"] == "test"]
    assert test_rows and all(r["phrasing_set"] == "test" for r in test_rows)
    assert all(r["phrasing_set"] == "train" for r in small_rows if r["split"] != "test")
    for row in test_rows:
        for sentence in _sentences(row["report"]):
            assert not any(sentence in report for report in train_reports), sentence


def test_without_holdout_every_split_uses_all_phrasings(tmp_path):
    manifest = build_demo_dataset(tmp_path / "ds", progress=False, num_cases=3, size=16, holdout_phrasings=False)
    assert {r["phrasing_set"] for r in _rows(manifest)} == {"all"}


def test_splits_are_per_patient_deterministic_and_near_70_15_15():
    splits = assign_splits(160, seed=3)
    assert splits == assign_splits(160, seed=3) and splits != assign_splits(160, seed=4)
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (112, 24, 24)
    assert sorted(set(assign_splits(3, seed=0))) == ["test", "train", "val"]


def test_manifest_is_accepted_by_the_manifest_reader(small_dataset):
    manifest_module = pytest.importorskip("medvl.data.manifest")
    records = manifest_module.read_manifest(small_dataset)
    assert [r.study_id for r in records] == [r["study_id"] for r in _rows(small_dataset)]
    assert all(r.volume_path.is_file() and r.split in {"train", "val", "test"} for r in records)
    assert Path(records[0].extras["organ_mask"]).is_file()
    assert set(records[0].labels) == set(FINDING_NAMES)


def test_volumes_load_through_the_volume_reader(small_dataset, small_rows):
    volume_module = pytest.importorskip("medvl.data.volume")
    volume = volume_module.load_volume(small_dataset.parent / small_rows[0]["volume"])
    raw = np.asarray(nib.load(small_dataset.parent / small_rows[0]["volume"]).dataobj)
    assert volume.array.shape == (32, 32, 32)
    np.testing.assert_array_equal(volume.array, raw.astype(np.float32))


def test_build_rejects_bad_arguments(tmp_path):
    for bad in ({"num_cases": 0}, {"size": 8}, {"spacing_mm": -1.0}, {"seed": -1}, {"spacing_mm": float("nan")}):
        with pytest.raises(ValueError):
            build_demo_dataset(tmp_path / "x", progress=False, **bad)
    with pytest.raises(ValueError, match="all of real_ct"):
        build_demo_dataset(tmp_path / "x", progress=False, real_ct="ct.nii.gz")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not an empty folder"):
        build_demo_dataset(tmp_path / "full", num_cases=1, size=16, progress=False)


# ------------------------------------------------------------------------------------------------ ensure
def test_ensure_reuses_a_build_and_rebuilds_when_arguments_change(tmp_path):
    root = tmp_path / "demo"
    args = {"num_cases": 2, "size": 16, "spacing_mm": 10.0, "seed": 0, "progress": False}
    manifest = ensure_demo_dataset(root, **args)
    assert manifest == root.resolve() / MANIFEST_NAME
    stamp = manifest.stat().st_mtime_ns
    assert ensure_demo_dataset(root, **args) == manifest and manifest.stat().st_mtime_ns == stamp

    rebuilt = ensure_demo_dataset(root, **{**args, "num_cases": 3})
    assert rebuilt == manifest and len(_rows(rebuilt)) == 3
    assert json.loads((root / INFO_NAME).read_text())["args"]["num_cases"] == 3
    assert not list(tmp_path.glob(".demo.building-*")) and not list(tmp_path.glob(".demo.old-*"))

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a demo dataset"):
        ensure_demo_dataset(tmp_path / "mine", **args)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_ensure_is_safe_when_called_concurrently(tmp_path):
    root = tmp_path / "shared"
    results, errors = [], []

    def call():
        try:
            results.append(ensure_demo_dataset(root, num_cases=3, size=16, progress=False))
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 3 and len(set(results)) == 1
    assert len(_rows(results[0])) == 3 and (root / INFO_NAME).is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".shared.") and p.is_dir()] == []


def test_command_line_builds_and_reports_bad_arguments(tmp_path, capsys):
    assert demo_main([str(tmp_path / "cli"), "--num-cases", "2", "--size", "16", "--no-progress"]) == 0
    assert (tmp_path / "cli" / MANIFEST_NAME).is_file() and "splenomegaly" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        demo_main([str(tmp_path / "bad"), "--size", "8"])
    assert exit_info.value.code == 2


# ------------------------------------------------------------------------------------------ real anatomy
def _real_paths(shared_data: Path) -> tuple[Path, Path, Path]:
    ct_dir = shared_data / "ct"
    paths = (ct_dir / "example_ct_sm.nii.gz", ct_dir / "example_seg.nii.gz", ct_dir / "example_seg_labels.json")
    if not all(p.is_file() for p in paths):
        pytest.skip(f"real CT + organ mask not found in {ct_dir}")
    return paths


def test_real_anatomy_lesion_lies_inside_the_real_liver(shared_data):
    ct_path, mask_path, labels_path = _real_paths(shared_data)
    anatomy = load_real_anatomy(ct_path, mask_path, labels_path)
    assert {"liver", "spleen", "kidney_left", "kidney_right", "aorta", "spine"} <= set(anatomy.voxel_counts)
    assert "splenomegaly" not in available_real_findings(anatomy)
    hu = anatomy.hu.copy()
    ctx = InsertionContext(hu, anatomy.organs, ORGAN_LABELS, anatomy.spacing_mm,
                           np.zeros(hu.shape, dtype=np.uint8), lesion_noise_hu=None)
    finding = insert_liver_lesions(ctx, np.random.default_rng(0), mask_id=1)
    assert finding is not None
    names = {int(k): v for k, v in json.loads(labels_path.read_text()).items()}
    source = np.asarray(nib.as_closest_canonical(nib.load(mask_path)).dataobj)
    liver_id = next(k for k, v in names.items() if v == "liver")
    lesion = ctx.finding_mask == 1
    assert source[tuple(finding.center_vox)] == liver_id and (source[lesion] == liver_id).all()
    assert abs(hu[lesion].mean() - np.median(anatomy.hu[source == liver_id])) > 20
    outside = source != liver_id  # the partial-volume rim may touch liver voxels, nothing else
    np.testing.assert_array_equal(hu[outside], anatomy.hu[outside])


def test_real_anatomy_build_writes_the_same_format(shared_data, tmp_path):
    ct_path, mask_path, labels_path = _real_paths(shared_data)
    manifest = build_demo_dataset(tmp_path / "real", num_cases=3, seed=0, real_ct=ct_path, real_mask=mask_path,
                                  real_labels=labels_path, progress=False)
    rows = _rows(manifest)
    assert {r["patient_id"] for r in rows} == {"real_patient_00000"} and {r["split"] for r in rows} == {"train"}
    for row in rows:
        assert "splenomegaly" not in row["labels"] and "liver lesion" in row["labels"]
        image = nib.load(manifest.parent / row["volume"])
        assert image.shape == (122, 101, 30) and nib.aff2axcodes(image.affine) == ("R", "A", "S")
        for finding in row["findings"]:
            assert finding["sentence"] in row["report"]
    info = json.loads((manifest.parent / INFO_NAME).read_text())
    assert info["args"]["real_ct"]["path"] == str(ct_path.resolve()) and info["args"]["size"] is None


def test_real_anatomy_rejects_mismatched_inputs(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.int16), affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 6), dtype=np.uint8), affine), tmp_path / "small_mask.nii.gz")
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 9, dtype=np.uint8), affine), tmp_path / "mask.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps({"1": "liver"}))
    with pytest.raises(ValueError, match="small_mask.nii.gz"):
        load_real_anatomy(tmp_path / "ct.nii.gz", tmp_path / "small_mask.nii.gz", tmp_path / "labels.json")
    with pytest.raises(ValueError, match=r"label ids \[9\]"):
        load_real_anatomy(tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz", tmp_path / "labels.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json"):
        load_real_anatomy(tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz", tmp_path / "bad.json")
