"""End to end: `train(cfg)` on a shrunken demo set, `evaluate`, resume, and 2-process DDP on CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from common.export import load_checkpoint
from medvl.evaluate import evaluate
from medvl.train import train

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "data.demo.num_cases=12", "data.demo.size=32", "data.preprocess.spatial_size=[32,32,32]",
    "data.batch_size=4", "data.tokenizer.vocab_size=300", "data.tokenizer.min_frequency=1",
    "model.embed_dim=16", "model.text_encoder.hidden_size=32", "model.text_encoder.num_layers=2",
    "model.text_encoder.num_heads=2", "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false", "callbacks.progress_bar=null",
]


def _compose(config_name: str, tmp: Path, *overrides: str):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=[f"paths.root_dir={tmp}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "run")
    return cfg


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("medvl")
    cfg = _compose("medvl_train", tmp, *TINY)
    metrics = train(cfg)
    return tmp, cfg, metrics


def test_train_writes_every_output_well_formed(trained_run):
    tmp, cfg, metrics = trained_run
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved) == set(metrics)
    # NaN (e.g. AUROC of a finding absent from a tiny split) is written as JSON null
    assert {k: v for k, v in saved.items() if v is not None} == pytest.approx(
        {k: v for k, v in metrics.items() if v == v})
    for key in ("retrieval/v2t_R@1", "retrieval/v2t_R@5", "retrieval/v2t_R@10", "retrieval/t2v_R@1",
                "retrieval/t2v_R@5", "retrieval/t2v_R@10", "zeroshot/auroc_mean", "grounding/pointing_acc",
                "test/loss", "val/loss"):
        assert key in saved, key
    assert any(k.startswith("zeroshot/auroc/") for k in saved)
    assert "grounding/pointing_acc_control_sentence" in saved and any(k.startswith("grounding/pointing_acc/") for k in saved)
    # per-epoch validation logs (and metric_curves.png) keep the headline metrics, not descriptors / breakdowns
    assert "val/grounding/pointing_acc" in saved and "val/zeroshot/auroc_mean" in saved
    assert not [k for k in saved if k.startswith("val/") and ("chance" in k or "pointing_acc/" in k or "uses_" in k)]
    for name in ("report_contrastive", "sentence_alignment", "word_alignment", "matching", "multimodal_mlm",
                 "text_mlm", "rotation", "view_contrastive", "reconstruction"):
        assert f"test/{name}_loss" in saved, name
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    for figure in ("loss_curves.png", "metric_curves.png", "similarity_matrix.png", "retrieval_examples.png",
                   "pointing_examples.png"):
        assert (run / "figures" / figure).read_bytes()[:4] == b"\x89PNG", figure
    resolved = (run / "config.yaml").read_text()
    assert "MedVLPretrainModule" in resolved and "${" not in resolved
    # the tokenizer travels inside the checkpoint, which loads without unpickling code
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert "[SENT]" in ckpt["hyper_parameters"]["tokenizer_json"]


def test_evaluate_writes_the_required_metrics(trained_run, tmp_path):
    tmp, cfg, _ = trained_run
    eval_cfg = _compose("medvl_evaluate", tmp, *[o for o in TINY if o.startswith("data.")],
                        f"ckpt_path={Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'}")
    with open_dict(eval_cfg):
        eval_cfg.paths.output_dir = str(tmp_path / "eval")
    metrics = evaluate(eval_cfg)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("retrieval/v2t_R@1", "retrieval/t2v_R@10", "zeroshot/auroc_mean", "grounding/pointing_acc"):
        assert key in saved and key in metrics
    assert 0.0 <= saved["retrieval/v2t_R@1"] <= 1.0
    # the full model points with its words' attention over the fine tokens (32^3 input / 8 = 4^3)
    assert saved["grounding/uses_word_alignment"] == 1.0 and saved["grounding/pointing_grid_tokens"] == 64


def test_evaluate_can_point_with_another_trained_attention(trained_run, tmp_path):
    tmp, cfg, _ = trained_run
    eval_cfg = _compose("medvl_evaluate", tmp, *[o for o in TINY if o.startswith("data.")],
                        f"ckpt_path={Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'}",
                        "pointing_source=sentence_alignment")
    with open_dict(eval_cfg):
        eval_cfg.paths.output_dir = str(tmp_path / "eval")
    metrics = evaluate(eval_cfg)
    assert metrics["grounding/uses_sentence_alignment"] == 1.0 and metrics["grounding/uses_word_alignment"] == 0.0
    assert metrics["grounding/pointing_grid_tokens"] == 8  # the coarse regions: 32^3 / 16 = 2^3


def test_evaluate_rejects_mismatched_preprocessing(trained_run, tmp_path):
    tmp, cfg, _ = trained_run
    eval_cfg = _compose("medvl_evaluate", tmp, *[o for o in TINY if o.startswith("data.")],
                        "data.preprocess.hu_window=[-500,500]",
                        f"ckpt_path={Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'}")
    with open_dict(eval_cfg):
        eval_cfg.paths.output_dir = str(tmp_path / "eval")
    with pytest.raises(ValueError, match="hu_window"):
        evaluate(eval_cfg)


def test_resume_continues_from_the_saved_step(trained_run):
    tmp, cfg, metrics = trained_run
    steps_one_epoch = metrics["trainer/global_step"]
    assert steps_one_epoch > 0
    resumed = _compose("medvl_train", tmp, *TINY, "trainer.max_epochs=2", "resume=true", "test=false")
    resumed.paths.output_dir = cfg.paths.output_dir
    again = train(resumed)
    assert again["trainer/global_step"] == 2 * steps_one_epoch


def test_two_process_ddp_run_tests_the_whole_split_like_one_process(tmp_path):
    """The user's command line with trainer=ddp on 2 CPU processes (gloo; Lightning re-launches the script), test
    stage included: it exits 0 and its test metrics are those of a 1-process evaluation of the same checkpoint
    over the whole test split (3 studies: DistributedSampler repeats one to give both ranks 2)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    data = [o for o in TINY if o.startswith("data.") and not o.startswith("data.demo.num_cases")] + [
        "data.demo.num_cases=20"]  # 14 train / 3 val / 3 test patients
    cmd = [sys.executable, "-m", "medvl.train", *data, *[o for o in TINY if not o.startswith("data.")],
           "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
           "trainer.strategy.process_group_backend=gloo", "+trainer.limit_train_batches=1", "callbacks.plots=null",
           f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'ddp'}"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["trainer/global_step"] == 1
    assert ddp["retrieval/chance_R@1"] == pytest.approx(1 / 3)  # all 3 test studies, the repeated one once
    (best,) = (tmp_path / "ddp" / "checkpoints").glob("best-*.ckpt")  # the checkpoint the test stage used
    eval_cfg = _compose("medvl_evaluate", tmp_path, *data, f"ckpt_path={best}", "logger=none")
    with open_dict(eval_cfg):
        eval_cfg.paths.output_dir = str(tmp_path / "eval")
    single = evaluate(eval_cfg)
    evaluation = ("retrieval/", "zeroshot/", "grounding/")
    ddp_eval = {k: v for k, v in ddp.items() if k.startswith(evaluation)}
    single_eval = {k: v for k, v in single.items() if k.startswith(evaluation)}
    assert any(k.startswith("grounding/pointing_acc/") for k in single_eval)  # per-organ keys are compared too
    assert set(ddp_eval) == set(single_eval)
    for key, value in single_eval.items():
        assert ddp_eval[key] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True) or (
            value != value and ddp_eval[key] is None), key  # JSON writes NaN as null
    assert (tmp_path / "ddp" / "figures" / "pointing_examples.png").is_file()


@pytest.mark.parametrize(("model", "backbone"), [("medvl_tiny_vit", "vit"), ("medvl_tiny_unet", "unet")])
def test_claims_configs_compose_into_a_cpu_model_and_a_side_preserving_augmented_demo(tmp_path, model, backbone):
    """`data=medvl_demo_large model=medvl_tiny_vit|unet` (the docs/results.md claims) build without a run."""
    import torch
    from hydra.utils import instantiate

    from medvl.models.components.volume_encoder import VolumeEncoder

    cfg = _compose("medvl_train", tmp_path, "data=medvl_demo_large", f"model={model}")
    datamodule = instantiate(cfg.data)  # validates preprocess + augmentation; builds nothing yet
    assert datamodule.augment_config.flip_prob == 0.0 and datamodule.augment_config.rotate90_prob == 0.0
    encoder_kwargs = dict(cfg.model.volume_encoder)
    encoder = VolumeEncoder(encoder_kwargs.pop("backbone"), image_size=list(cfg.data.preprocess.spatial_size),
                            out_dim=cfg.model.embed_dim, **encoder_kwargs)
    assert encoder.backbone_name == backbone
    with torch.no_grad():
        assert encoder(torch.rand(2, 1, 64, 64, 64))["pooled"].shape == (2, cfg.model.embed_dim)
    assert cfg.model.zeroshot_templates.context  # prompts are encoded in a report context


@pytest.mark.parametrize(("model", "backbone"), [("medvl_tiny_vit_minilm", "vit"), ("medvl_tiny_unet_minilm", "unet")])
def test_minilm_configs_keep_their_volume_encoder_and_size_the_report_encoder_like_minilm(tmp_path, model, backbone):
    """The MiniLM variants change only the report encoder (all-MiniLM-L6-v2's shape) and its learning rate."""
    cfg = _compose("medvl_train", tmp_path, f"model={model}")
    assert cfg.model.volume_encoder.backbone == backbone
    text = cfg.model.text_encoder
    assert (text.hidden_size, text.num_layers, text.num_heads, text.intermediate_size) == (384, 6, 12, 1536)
    assert cfg.model.lr_scales.text_encoder == 0.03


def test_evaluate_takes_other_zero_shot_prompts_from_the_command_line(trained_run, tmp_path):
    """The override reaches the model (a phrase for a label the data lacks is refused with its name)."""
    tmp, cfg, _ = trained_run
    ckpt = f"ckpt_path={Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'}"
    data = [o for o in TINY if o.startswith("data.")]
    eval_cfg = _compose("medvl_evaluate", tmp, *data, ckpt, "zeroshot_templates={phrases: {aortic plaque: calcified plaque}}")
    assert dict(eval_cfg.zeroshot_templates.phrases) == {"aortic plaque": "calcified plaque"}
    with pytest.raises(ValueError, match="'aortic plaque', which is not a finding label"):
        evaluate(eval_cfg)


def test_evaluate_can_run_on_the_validation_split(trained_run, tmp_path):
    tmp, cfg, _ = trained_run
    data = [o for o in TINY if o.startswith("data.")]
    ckpt = f"ckpt_path={Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'}"
    results = {}
    for split in ("val", "test"):
        eval_cfg = _compose("medvl_evaluate", tmp, *data, ckpt, f"split={split}")
        with open_dict(eval_cfg):
            eval_cfg.paths.output_dir = str(tmp_path / split)
        results[split] = evaluate(eval_cfg)
        assert (tmp_path / split / "evaluated_checkpoint.txt").read_text().endswith(f"split: {split}\n")
    # the same deterministic model on other studies (the demo's manifest fixes 2 val and 2 test studies)
    assert results["val"]["test/loss"] != pytest.approx(results["test"]["test/loss"])
    with open_dict(eval_cfg):
        eval_cfg.split = "train"
    with pytest.raises(ValueError, match="split='train'"):
        evaluate(eval_cfg)


def test_each_demo_configuration_builds_into_its_own_folder(tmp_path):
    """`data=medvl_demo_large` must not rebuild (and so destroy) the default demo set, nor the other way round."""
    from hydra.utils import instantiate

    default = instantiate(_compose("medvl_train", tmp_path).data)
    large = instantiate(_compose("medvl_train", tmp_path, "data=medvl_demo_large").data)
    assert default.demo_dir == tmp_path / "data" / "medvl_demo"  # the folder the docs name
    assert large.demo_dir.parent == default.demo_dir.parent and large.demo_dir != default.demo_dir
    assert large.demo != default.demo
    from medvl.data.datamodule import CTReportDataModule

    with pytest.raises(ValueError, match="demo_subdir"):
        CTReportDataModule(data_dir=str(tmp_path), demo_subdir="../x")
