"""`python -m medvl.export`: a Lightning-style checkpoint of the real pre-training module -> safetensors backbone that
loads strictly into MONAI's networks, TorchScript / ONNX with parity, a transformers folder, and clear errors."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from monai.networks.nets import UNETR, SwinUNETR
from transformers import AutoModel, AutoTokenizer

from common.export import UnsafeCheckpointError, WeightsMismatchError
from common.text.tokenizer import tokenizer_to_json, train_wordpiece_tokenizer
from medvl.data.transforms import PreprocessConfig
from medvl.export import (
    INFO_FILE,
    ONNX_FILE,
    REPORT_ENCODER_DIR,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    bert_attention_mask,
    export_pretrained,
    load_pretrained_module,
    main,
    parse_args,
)
from medvl.models.components.report_tokenization import ReportBatchEncoder
from medvl.models.medvl_module import MedVLPretrainModule

SENTENCES = [
    "The liver is normal in size.", "No focal lesion is seen in the spleen.",
    "A small nodule is present in the right lower lobe.", "There is no pleural effusion.",
]
PREPROCESS = PreprocessConfig(spacing=(4.0, 4.0, 4.0), hu_window=(-900.0, 1100.0), spatial_size=(32, 32, 32))


def _module(**volume_overrides) -> MedVLPretrainModule:
    torch.manual_seed(0)
    tokenizer = train_wordpiece_tokenizer(SENTENCES * 2, vocab_size=200, min_frequency=1)
    return MedVLPretrainModule(
        tokenizer_json=tokenizer_to_json(tokenizer), label_names=["nodule"], preprocess=PREPROCESS.to_dict(),
        volume_encoder={"backbone": "swin", "feature_size": 12, "depths": [1, 1, 1, 1], **volume_overrides},
        text_encoder={"hidden_size": 16, "num_layers": 3, "num_heads": 2, "num_cross_attention_layers": 1},
        embed_dim=16, max_length=64, max_sentences=8,
    ).eval()


def _save_lightning_checkpoint(module: MedVLPretrainModule, path: Path) -> Path:
    """What Lightning writes, reduced to what the contract promises: state_dict + plain hyper_parameters."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "epoch": 3,
                "global_step": 42, "pytorch-lightning_version": "2.6.0"}, path)
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    module = _module()
    checkpoint = _save_lightning_checkpoint(module, tmp / "last.ckpt")
    out = tmp / "export"
    # ONNX export of even a tiny Swin takes ~10 s on 2 CPU cores: it has its own slow test below
    assert main([f"ckpt_path={checkpoint}", f"out={out}", "format=safetensors,torchscript,transformers"]) == 0
    return module, checkpoint, out


def test_backbone_loads_strictly_into_swinunetr_with_identical_tensors(pretrained):
    module, _, out = pretrained
    info = json.loads((out / INFO_FILE).read_text())
    spec = info["backbone_spec"]
    assert spec["segmentation_class"] == "monai.networks.nets.SwinUNETR" and spec["backbone_attribute"] == "swinViT"
    network = SwinUNETR(out_channels=3, **spec["segmentation_kwargs"])
    weights = safetensors.torch.load_file(out / WEIGHTS_FILE)
    result = network.swinViT.load_state_dict(weights, strict=True)  # what a MONAI user would write
    assert not result.missing_keys and not result.unexpected_keys
    expected = module.volume_encoder.backbone_state_dict()
    assert set(weights) == set(expected)
    for name, tensor in network.swinViT.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_description_json_has_everything_to_preprocess_identically(pretrained):
    module, checkpoint, out = pretrained
    info = json.loads((out / INFO_FILE).read_text())
    assert info["preprocess"] == module.hparams["preprocess"] == PREPROCESS.to_dict()
    assert info["input"]["shape"] == ["B", 1, 32, 32, 32] and info["input"]["value_range"] == [0.0, 1.0]
    # tiny Swin at 32^3: fine = stage 2 (4^3 tokens), coarse = stage 3 (2^3), last = stage 4 (1^3); E = embed_dim 16
    assert info["outputs"]["pooled"]["shape"] == ["B", 16]
    assert info["outputs"]["fine"]["shape"] == ["B", 64, 16] and info["outputs"]["fine"]["stride_voxels"] == 8
    assert info["outputs"]["coarse"]["shape"] == ["B", 8, 16] and info["outputs"]["tokens"]["shape"] == ["B", 1, 16]
    assert info["backbone_spec"]["segmentation_kwargs"]["window_size"] == [2, 2, 2]
    assert info["files"] == {"backbone_weights": WEIGHTS_FILE, "heads_weights": "volume_encoder_heads.safetensors",
                             "torchscript": TORCHSCRIPT_FILE}
    assert info["source_checkpoint"]["file_name"] == checkpoint.name
    assert info["report_encoder"] == REPORT_ENCODER_DIR


def _reference_outputs(module: MedVLPretrainModule, volume: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        reference = module.volume_encoder(volume)
    return [reference[name] for name in ("pooled", "fine", "coarse", "tokens")]


def test_torchscript_reproduces_pytorch(pretrained):
    module, _, out = pretrained
    volume = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))  # not the export's example
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream; libtorch still loads it
        scripted = torch.jit.load(str(out / TORCHSCRIPT_FILE))
    for found, want in zip(scripted(volume), _reference_outputs(module, volume)):
        torch.testing.assert_close(found, want, atol=1e-5, rtol=1e-4)


def test_onnx_reproduces_pytorch_at_another_batch_size(pretrained, tmp_path):
    import onnxruntime

    module, checkpoint, _ = pretrained
    assert main([f"ckpt_path={checkpoint}", f"out={tmp_path}", "format=onnx"]) == 0
    volume = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(tmp_path / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["pooled", "fine", "coarse", "tokens"]
    found = session.run(None, {"volume": volume.numpy()})  # batch 2: the batch axis is dynamic
    for array, want in zip(found, _reference_outputs(module, volume)):
        np.testing.assert_allclose(array, want.numpy(), atol=1e-4, rtol=1e-3)
    assert json.loads((tmp_path / INFO_FILE).read_text())["files"] == {"onnx": ONNX_FILE}


def test_report_encoder_loads_offline_with_auto_classes_and_reproduces_retrieval_embeddings(pretrained):
    module, _, out = pretrained
    folder = out / REPORT_ENCODER_DIR
    bert = AutoModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert tokenizer.get_vocab() == module.tokenizer.get_vocab()
    reports = [[SENTENCES[0], SENTENCES[2]], [SENTENCES[3]]]
    batch = ReportBatchEncoder(tokenizer, max_length=64, max_sentences=8)(reports)
    with torch.no_grad():
        hidden = bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                      attention_mask=bert_attention_mask(batch)).last_hidden_state
        expected_tokens = module.text_encoder.encode_text(batch)["tokens"]
        expected_report = module.encode_report(reports)
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(hidden[valid], expected_tokens[valid], atol=1e-5, rtol=1e-5)
    projection = torch.nn.Linear(16, 16)
    weights = safetensors.torch.load_file(folder / "report_projection.safetensors")
    projection.load_state_dict({"weight": weights["net.1.weight"], "bias": weights["net.1.bias"]}, strict=True)
    torch.testing.assert_close(projection(hidden[:, 0]), expected_report, atol=1e-5, rtol=1e-5)
    info = json.loads((folder / "medvl_report_encoder.json").read_text())
    assert info["num_layers"] == 3 and info["report_projection"]["in_dim"] == 16
    # without the hierarchical mask the sentence tokens see other sentences: a different (wrong) encoding
    with torch.no_grad():
        plain = bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                     attention_mask=batch["attention_mask"].long()).last_hidden_state
    assert not torch.allclose(plain[valid], expected_tokens[valid], atol=1e-4)


def test_lower_layers_export_matches_lower_tokens(pretrained, tmp_path):
    module, checkpoint, _ = pretrained
    export_pretrained(checkpoint, tmp_path, formats=["transformers"], text_layers="lower")
    bert = AutoModel.from_pretrained(tmp_path / REPORT_ENCODER_DIR, local_files_only=True, add_pooling_layer=False)
    assert bert.config.num_hidden_layers == 2  # 3 layers, the last one cross-attends
    assert not (tmp_path / WEIGHTS_FILE).exists()  # only the requested formats (+ the description JSON)
    assert (tmp_path / INFO_FILE).is_file()


def test_unknown_argument_is_refused_with_the_valid_ones(capsys):
    assert main(["ckpt_path=a.ckpt", "out=x", "fromat=onnx"]) == 2
    error = capsys.readouterr().err
    assert "unknown argument 'fromat'" in error
    for name in ("ckpt_path", "out", "format", "text_layers", "overwrite"):
        assert name in error


@pytest.mark.parametrize("argv, message", [
    (["out=x"], "missing required argument(s) ['ckpt_path']"),
    (["ckpt_path=a", "out"], "is not key=value"),
    (["ckpt_path=a", "out=x", "format=onnx,pdf"], "unknown format(s) ['pdf']"),
    (["ckpt_path=a", "out=x", "overwrite=maybe"], "overwrite must be true or false"),
])
def test_bad_arguments(argv, message):
    with pytest.raises(ValueError) as error:
        parse_args(argv)
    assert message in str(error.value)


def test_parse_args_defaults_to_every_format():
    parsed = parse_args(["ckpt_path=a.ckpt", "out=dir", "format=all"])
    assert parsed["formats"] == ["safetensors", "torchscript", "onnx", "transformers"] and parsed["overwrite"] is False


def test_checkpoint_of_another_size_lists_the_mismatched_keys(tmp_path, capsys):
    module = _module()
    state = {key: value for key, value in module.state_dict().items()}
    other = _module(feature_size=24)  # the hyper-parameters say 24, the weights are 12
    checkpoint = tmp_path / "other.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": dict(other.hparams)}, checkpoint)
    with pytest.raises(WeightsMismatchError) as error:
        load_pretrained_module(checkpoint)
    assert error.value.shape_mismatches
    names = [name for name, _, _ in error.value.shape_mismatches]
    assert "volume_encoder.backbone.patch_embed.proj.weight" in names
    assert names[0] in str(error.value) and f"{len(names)} shape mismatches" in str(error.value)
    assert main([f"ckpt_path={checkpoint}", f"out={tmp_path / 'out'}"]) == 1
    assert "shape mismatches" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_checkpoint_needing_arbitrary_unpickling_is_refused(tmp_path):
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"callback": Path("x")}}, checkpoint)
    with pytest.raises(UnsafeCheckpointError):
        load_pretrained_module(checkpoint)


def test_not_a_pretraining_checkpoint(tmp_path):
    checkpoint = tmp_path / "other_model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"lr": 0.1}}, checkpoint)
    with pytest.raises(ValueError, match=r"other_model.ckpt is not a checkpoint of .*MedVLPretrainModule.*written by another model"):
        load_pretrained_module(checkpoint)


def test_existing_export_is_not_overwritten_silently(pretrained):
    _, checkpoint, out = pretrained
    with pytest.raises(ValueError, match="overwrite=true"):
        export_pretrained(checkpoint, out, formats=["safetensors"])


def test_vit_checkpoint_exports_a_backbone_that_loads_strictly_into_unetr(tmp_path):
    module = _module(backbone="vit", vit_hidden_size=24, vit_heads=2)  # UNETR's 12 blocks of 16^3 patches, narrow
    checkpoint = _save_lightning_checkpoint(module, tmp_path / "vit.ckpt")
    info = export_pretrained(checkpoint, tmp_path / "export", formats=["safetensors"])
    spec = info["backbone_spec"]
    assert spec["segmentation_class"] == "monai.networks.nets.UNETR" and spec["backbone_attribute"] == "vit"
    network = UNETR(out_channels=2, **spec["segmentation_kwargs"])
    network.vit.load_state_dict(safetensors.torch.load_file(tmp_path / "export" / WEIGHTS_FILE), strict=True)
    for name, tensor in network.vit.state_dict().items():
        assert torch.equal(tensor, module.volume_encoder.backbone_state_dict()[name]), name
