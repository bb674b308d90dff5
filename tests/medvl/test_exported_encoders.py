"""`medvl.export.load_exported`: an export folder reproduces the trained module's volume and report embeddings on
the safetensors, TorchScript and ONNX paths, including the batch-norm statistics of both embeddings."""
from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from common.text.tokenizer import tokenizer_to_json, train_wordpiece_tokenizer
from medvl.data.transforms import PreprocessConfig
from medvl.export import REPORT_ENCODER_DIR, bert_attention_mask, export_pretrained, load_exported
from medvl.exported_encoders import EMBEDDING_COSINE_MIN, available_runtimes
from medvl.models.components.report_tokenization import ReportBatchEncoder
from medvl.models.medvl_module import MedVLPretrainModule

SENTENCES = [
    "The liver is normal in size.", "No focal lesion is seen in the spleen.",
    "A small nodule is present in the right lower lobe.", "There is no pleural effusion.",
]
REPORTS = [[SENTENCES[0], SENTENCES[2]], [SENTENCES[3]], [SENTENCES[1], SENTENCES[0], SENTENCES[3]]]


def _trained_like_module() -> MedVLPretrainModule:
    """A tiny module whose batch-norm statistics are far from the fresh (0, 1), as after training."""
    torch.manual_seed(0)
    tokenizer = train_wordpiece_tokenizer(SENTENCES * 2, vocab_size=200, min_frequency=1)
    module = MedVLPretrainModule(
        tokenizer_json=tokenizer_to_json(tokenizer), label_names=["nodule"],
        preprocess=PreprocessConfig(spacing=(4.0, 4.0, 4.0), spatial_size=(32, 32, 32)).to_dict(),
        volume_encoder={"backbone": "unet", "unet_features": [4, 4, 8, 8, 8]},
        text_encoder={"hidden_size": 16, "num_layers": 2, "num_heads": 2, "num_cross_attention_layers": 1},
        embed_dim=8, max_length=64, max_sentences=8,
    )
    generator = torch.Generator().manual_seed(3)
    for norm in (module.report_norm, module.volume_encoder.pooled_norm):
        norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator))
        norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) * 4 + 0.1)
    return module.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exported")
    module = _trained_like_module()
    checkpoint = tmp / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    export_pretrained(checkpoint, tmp / "export", formats=["safetensors", "torchscript", "onnx", "transformers"])
    return module, tmp / "export"


def test_every_runtime_reproduces_the_volume_embeddings(exported):
    module, out = exported
    assert available_runtimes(out) == ["safetensors", "torchscript", "onnx"]
    volume = torch.rand(3, 1, 32, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = module.encode_volume(volume)
    for runtime in ("safetensors", "torchscript", "onnx"):
        encoders = load_exported(out, runtime=runtime)
        found = encoders.encode_volume(volume)
        for name in ("pooled", "fine", "coarse", "tokens"):
            cosine = F.cosine_similarity(found[name], expected[name], dim=-1).min()
            assert cosine >= EMBEDDING_COSINE_MIN, (runtime, name, float(cosine))
    assert load_exported(out).runtime == "safetensors"


def test_report_embeddings_match_encode_report_with_the_standardisation(exported):
    module, out = exported
    with torch.no_grad():
        expected = module.encode_report(REPORTS)
    for runtime in ("safetensors", "onnx"):
        found = load_exported(out, runtime=runtime).encode_report(REPORTS)
        assert F.cosine_similarity(found, expected, dim=-1).min() >= EMBEDDING_COSINE_MIN
        torch.testing.assert_close(found, expected, atol=1e-5, rtol=1e-4)
    # what the docs used to say (projection of the raw [CLS], no standardisation) is far off with these statistics
    folder = out / REPORT_ENCODER_DIR
    from transformers import AutoModel, AutoTokenizer

    bert = AutoModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False).eval()
    batch = ReportBatchEncoder(AutoTokenizer.from_pretrained(folder), max_length=64, max_sentences=8)(REPORTS)
    with torch.no_grad():
        hidden = bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                      attention_mask=bert_attention_mask(batch)).last_hidden_state
    weights = safetensors.torch.load_file(folder / "report_projection.safetensors")
    unstandardised = hidden[:, 0] @ weights["net.1.weight"].T + weights["net.1.bias"]
    assert F.cosine_similarity(unstandardised, expected, dim=-1).min() < 0.99
    info = json.loads((folder / "medvl_report_encoder.json").read_text())
    assert info["report_norm"]["file"] == "report_norm.safetensors"


def test_bad_runtime_and_wrong_volume_shape(exported, tmp_path):
    _, out = exported
    with pytest.raises(ValueError, match="runtime must be"):
        load_exported(out, runtime="tensorrt")
    encoders = load_exported(out, runtime="torchscript")
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32, 32\)"):
        encoders.encode_volume(torch.rand(1, 1, 16, 32, 32))
    with pytest.raises(FileNotFoundError, match="not a medvl export folder"):
        load_exported(tmp_path)
