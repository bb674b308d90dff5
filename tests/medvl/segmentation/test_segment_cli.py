"""End to end on the real CT: `segment(cfg)` fine-tunes a few steps from an export, tests, writes a bundle, then
predicts a NIfTI label map on the input's grid and evaluates the checkpoint."""
from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from medvl.segment import segment


def _compose(tmp: Path, output_dir: Path, *overrides: str):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="medvl_segment", overrides=[f"paths.root_dir={tmp}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture(scope="module")
def real_ct_run(tmp_path_factory, shared_data, tiny_export):
    tmp = tmp_path_factory.mktemp("segment")
    ct = shared_data / "ct"
    rows = [{"volume": str(ct / "example_ct_sm.nii.gz"), "label": str(ct / "example_seg.nii.gz"), "split": split,
             "study_id": f"ct_{split}"} for split in ("train", "val", "test")]  # one patient: an overfitting smoke test
    manifest = tmp / "labels.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = [f"data.manifest={manifest}", f"data.source_labels={ct / 'example_seg_labels.json'}", "data.cache_dir=null",
            "data.batch_size=1", "data.samples_per_volume=1"]
    cfg = _compose(tmp, tmp / "run", f"export_dir={tiny_export}", *data, "trainer.max_epochs=2",
                   "trainer.check_val_every_n_epoch=1", "trainer.num_sanity_val_steps=0", "logger=none",
                   "callbacks.progress_bar=null", "callbacks.lr_monitor=null",
                   "trainer.enable_model_summary=false",
                   "model.scheduler=null")
    metrics = segment(cfg)
    return tmp, cfg, metrics, data, ct


def test_training_writes_metrics_checkpoints_and_a_bundle(real_ct_run):
    tmp, cfg, metrics, _, _ = real_ct_run
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "metrics.json").read_text())
    for name in ("liver", "spleen", "kidney"):
        assert 0.0 <= saved[f"val/dice/{name}"] <= 1.0 and 0.0 <= saved[f"test/dice/{name}"] <= 1.0
    assert math.isfinite(saved["test/segmentation_loss"]) and saved["trainer/global_step"] == 2.0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    for part in ("configs/inference.json", "configs/metadata.json", "models/model.pt"):
        assert (run / "bundle" / part).is_file(), part
    metadata = json.loads((run / "bundle" / "configs" / "metadata.json").read_text())
    assert metadata["pred_classes"] == {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}
    # a Dice curve with every validation (after steps 1 and 2) at its own step, the last one included
    curves = json.loads((run / "figures" / "curves.json").read_text())
    assert [step for step, _ in curves["val/dice_mean"]] == [1, 2]
    assert curves["val/dice_mean"][-1][1] == pytest.approx(saved["val/dice_mean"], nan_ok=True)
    assert (run / "figures" / "metric_curves.png").is_file()


def test_predict_writes_a_label_map_on_the_input_grid(real_ct_run):
    tmp, cfg, _, _, ct = real_ct_run
    out = tmp / "predict"
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    result = segment(_compose(tmp, out, "mode=predict", f"ckpt_path={checkpoint}",
                              f"predict.input={ct / 'example_ct_sm.nii.gz'}"))
    (written,) = result["predictions"]
    prediction, source = nib.load(written), nib.load(ct / "example_ct_sm.nii.gz")
    assert Path(written).name == "example_ct_sm_seg.nii.gz"
    np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-5)
    assert prediction.shape == source.shape
    assert set(np.unique(np.asarray(prediction.dataobj)).tolist()) <= {0, 1, 2, 3}


def test_evaluate_reports_dice_per_class(real_ct_run):
    tmp, cfg, _, data, _ = real_ct_run
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    metrics = segment(_compose(tmp, tmp / "evaluate", "mode=evaluate", f"ckpt_path={checkpoint}", "logger=none",
                               "trainer.enable_model_summary=false", *data))
    assert set(metrics) >= {"test/dice/liver", "test/dice/spleen", "test/dice/kidney", "test/dice_mean"}
    assert json.loads((tmp / "evaluate" / "metrics.json").read_text()) == pytest.approx(metrics)
    # the checkpoint carries its label map: evaluating needs the manifest, not data.source_labels again
    data_without_labels = [o for o in data if not o.startswith("data.source_labels=")]
    again = segment(_compose(tmp, tmp / "evaluate2", "mode=evaluate", f"ckpt_path={checkpoint}", "logger=none",
                             "trainer.enable_model_summary=false", *data_without_labels))
    assert again == pytest.approx(metrics)


def test_structure_names_without_source_labels_name_the_config_key(tmp_path):
    from medvl.segmentation.labels import resolve_class_map

    with pytest.raises(ValueError, match="data.source_labels"):
        resolve_class_map({"liver": ["liver"]}, None)


def test_modes_need_their_arguments(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        segment(_compose(tmp_path, tmp_path / "x", "mode=finetune"))
    with pytest.raises(ValueError, match="needs ckpt_path"):
        segment(_compose(tmp_path, tmp_path / "y", "mode=predict"))


def test_configs_compose_into_a_pretrained_and_a_random_model(tmp_path, tiny_export, tiny_encoder):
    import torch
    from hydra.utils import instantiate

    for model, pretrained in (("medvl_seg_finetune", True), ("medvl_seg_random", False)):
        cfg = _compose(tmp_path, tmp_path / model, f"export_dir={tiny_export}", f"model={model}")
        datamodule = instantiate(cfg.data)
        assert datamodule.roi_size == [64, 64, 64] and datamodule.class_names[1:] == ["liver", "spleen", "kidney"]
        module = instantiate(cfg.model, **datamodule.model_kwargs())
        weight = module.network.swinViT.patch_embed.proj.weight
        assert torch.equal(weight, tiny_encoder.backbone.patch_embed.proj.weight) is pretrained
        assert module.hparams["pretrained"] is pretrained and module.hparams["network_spec"]["image_size"] == [64, 64, 64]
