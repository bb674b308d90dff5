"""Tests for common/export.py: safetensors round trips, loading checks, checkpoints, TorchScript and ONNX parity."""
from __future__ import annotations

import logging

import onnx
import onnxruntime
import pytest
import safetensors
import safetensors.torch
import torch
from onnx import numpy_helper
from torch import nn

from common.export import (
    ExportError,
    ExportParityError,
    UnsafeCheckpointError,
    WeightsFileError,
    WeightsMismatchError,
    eval_mode,
    export_onnx,
    export_torchscript,
    load_checkpoint,
    load_weights,
    read_weights,
    save_weights,
    state_dict_from_checkpoint,
    verify_onnx,
    verify_torchscript,
)


class TinyNet(nn.Module):
    """Conv3d encoder + Linear head (~200 parameters); dropout makes train and eval mode differ."""

    def __init__(self, channels: int = 2, classes: int = 3, tied: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv3d(1, channels, 3, stride=2, padding=1), nn.ReLU())
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(channels, classes)
        if tied:
            self.tied_head = nn.Linear(channels, classes)
            self.tied_head.weight = self.head.weight  # the same Parameter under two names

    def embed(self, volume: torch.Tensor) -> torch.Tensor:
        # (B, 1, D, H, W) -> (B, C, D/2, H/2, W/2) -> (B, C)
        return self.encoder(volume).mean(dim=(2, 3, 4))

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(volume)))


class TupleOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()

    def forward(self, volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(volume), self.net.embed(volume)


class DictOutput(TupleOutput):
    def forward(self, volume: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"logits": self.net(volume), "embedding": self.net.embed(volume)}


class Pipeline(nn.Module):
    """A pre-training model holding the encoder as a sub-module, as a LightningModule would."""

    def __init__(self) -> None:
        super().__init__()
        self.volume_encoder = TinyNet()
        self.text_proj = nn.Linear(5, 2)


class TraceDivergentNet(TinyNet):
    """Behaves differently while being traced / exported: the file cannot match the module."""

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        logits = super().forward(volume)
        if torch.jit.is_tracing() or torch.compiler.is_exporting():
            return logits * 2.0 + 1.0
        return logits


class BatchOneOnlyNet(TinyNet):
    """Flattens with a hard-coded batch of 1: the module itself only runs at batch size 1."""

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        # (1, C) -> (1, C); any other batch size gives (1, B*C), which the head rejects
        return self.head(self.embed(volume).reshape(1, -1))


class BatchBranchNet(TinyNet):
    """Branches on the batch size: export freezes the batch-1 branch."""

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        logits = super().forward(volume)
        return logits * 2.0 if volume.shape[0] == 1 else logits


class PickledConfig:
    """A custom class: pickling an instance needs arbitrary code to load it back."""

    def __init__(self) -> None:
        self.depth = 3


@pytest.fixture
def volume() -> torch.Tensor:
    return torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for parameter in module.parameters():
        nn.init.normal_(parameter, std=0.5)
    return module


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)
    )


# ---------------------------------------------------------------------------------------------- safetensors


def test_round_trip_is_exact_with_metadata_and_tied_weight(tmp_path):
    net = _seeded(TinyNet(tied=True))
    path = save_weights(net, tmp_path / "net.safetensors", metadata={"arch": "TinyNet", "channels": "2"})

    state, metadata = read_weights(path)
    expected = net.state_dict()
    assert set(state) == set(expected)
    assert all(_bitwise_equal(state[k], expected[k]) for k in expected)
    assert metadata == {"arch": "TinyNet", "channels": "2", "format": "pt"}
    # stored once on disk, given back as one shared tensor under both names
    with safetensors.safe_open(str(path), framework="pt") as handle:
        assert set(handle.keys()) == set(expected) - {"tied_head.weight"}
    assert state["tied_head.weight"] is state["head.weight"]


def test_round_trip_of_views_nan_and_non_float_dtypes(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "transposed": base.t(),  # non-contiguous
        "rows_0_2": base[:3],  # overlaps "rows_1_3" in the same storage
        "rows_1_3": base[1:],
        "alias": base,  # same view as "base": stored once
        "base": base,
        "nan_and_negative_zero": torch.tensor([float("nan"), -0.0, float("inf")]),
        "step": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False]),
        "half": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
        "empty": torch.zeros(0, 3),
    }
    state_back, _ = read_weights(save_weights(state, tmp_path / "w.safetensors"))

    assert set(state_back) == set(state)
    for name, tensor in state.items():
        assert _bitwise_equal(state_back[name], tensor.contiguous()), name
    assert state_back["alias"] is state_back["base"]


def test_atomic_write_leaves_only_the_target_file(tmp_path):
    path = tmp_path / "sub" / "net.safetensors"
    save_weights(_seeded(TinyNet()), path)
    save_weights(_seeded(TinyNet(), seed=1), path)  # overwrite in place
    assert [p.name for p in tmp_path.rglob("*")] == ["sub", "net.safetensors"]


def test_failed_verification_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "net.safetensors"
    good = _seeded(TinyNet())
    save_weights(good, path)
    real_save_file = safetensors.torch.save_file

    def corrupting_save_file(tensors, filename, metadata=None):
        tensors = dict(tensors, **{"head.bias": tensors["head.bias"] + 1.0})
        real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", corrupting_save_file)
    with pytest.raises(ExportError, match="head.bias"):
        save_weights(_seeded(TinyNet(), seed=1), path)

    assert [p.name for p in tmp_path.iterdir()] == ["net.safetensors"]
    state, _ = read_weights(path)
    assert torch.equal(state["head.bias"], good.head.bias)


@pytest.mark.parametrize(
    ("state", "metadata", "message"),
    [
        ({}, None, "no tensors"),
        ({"w": torch.ones(2), "step": 3}, None, "step"),
        ({"w": torch.ones(2)}, {"epoch": 3}, "epoch"),
        ({"w": torch.ones(2)}, {"__tied_weights__": "{}"}, "reserved"),
    ],
)
def test_save_weights_rejects_bad_arguments(tmp_path, state, metadata, message):
    with pytest.raises(ValueError, match=message):
        save_weights(state, tmp_path / "w.safetensors", metadata=metadata)
    assert list(tmp_path.iterdir()) == []


def test_read_weights_names_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        read_weights(tmp_path / "nope.safetensors")
    text_file = tmp_path / "notes.safetensors"
    text_file.write_text("definitely not a header")
    with pytest.raises(WeightsFileError, match="notes.safetensors"):
        read_weights(text_file)
    torch.save({"w": torch.ones(2)}, tmp_path / "model.pt")
    with pytest.raises(WeightsFileError, match="load_checkpoint"):
        read_weights(tmp_path / "model.pt")


# ---------------------------------------------------------------------------------------------- load_weights


def test_mismatch_error_lists_exact_missing_unexpected_and_shape_keys(tmp_path):
    state = TinyNet(channels=4).state_dict()
    del state["head.bias"]
    state["extra.weight"] = torch.ones(1)
    path = save_weights(state, tmp_path / "w.safetensors")
    model = TinyNet(channels=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    with pytest.raises(WeightsMismatchError) as caught:
        load_weights(model, path)

    error = caught.value
    assert error.missing == ["head.bias"]
    assert error.unexpected == ["extra.weight"]
    assert error.shape_mismatches == [
        ("encoder.0.bias", (2,), (4,)),
        ("encoder.0.weight", (2, 1, 3, 3, 3), (4, 1, 3, 3, 3)),
        ("head.weight", (3, 2), (3, 4)),
    ]
    message = str(error)
    for text in ["head.bias", "extra.weight", "encoder.0.weight: model [2, 1, 3, 3, 3] vs weights [4, 1, 3, 3, 3]",
                 str(path), "How to fix"]:
        assert text in message
    # nothing was copied into the model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_mismatch_message_is_truncated():
    model = nn.Sequential(*[nn.Linear(1, 1) for _ in range(30)])  # 60 keys
    with pytest.raises(WeightsMismatchError) as caught:
        load_weights(model, {"other": torch.ones(1)})
    assert len(caught.value.missing) == 60
    assert "... and 40 more" in str(caught.value)
    assert len(str(caught.value)) < 2000


def test_prefix_loads_a_sub_module(tmp_path):
    pipeline = _seeded(Pipeline())
    path = save_weights(pipeline, tmp_path / "pipeline.safetensors")

    for prefix in ("volume_encoder.", "volume_encoder"):
        encoder = load_weights(TinyNet(), path, prefix=prefix)
        assert all(torch.equal(v, pipeline.volume_encoder.state_dict()[k]) for k, v in encoder.state_dict().items())

    with pytest.raises(WeightsMismatchError, match=r"text_proj\..*volume_encoder\."):
        load_weights(TinyNet(), path, prefix="image_encoder.")
    with pytest.raises(WeightsMismatchError, match=r"prefix='volume_encoder\.'"):
        load_weights(TinyNet(), path)  # forgot the prefix: the message suggests it


def test_non_strict_loads_the_overlap_and_logs(caplog):
    source = _seeded(TinyNet())
    state = dict(source.state_dict(), **{"extra.weight": torch.ones(1)})
    del state["head.bias"]
    model = TinyNet()
    initial_bias = model.head.bias.detach().clone()

    with caplog.at_level(logging.WARNING, logger="common.export"):
        load_weights(model, state, strict=False)

    assert torch.equal(model.head.weight, source.head.weight)
    assert torch.equal(model.head.bias, initial_bias)
    assert "head.bias" in caplog.text and "extra.weight" in caplog.text
    with pytest.raises(WeightsMismatchError, match="head.weight"):
        load_weights(TinyNet(channels=4), state, strict=False)  # shapes never load


def test_tied_key_may_be_absent_from_the_weights():
    source = _seeded(TinyNet(tied=True))
    state = {k: v for k, v in source.state_dict().items() if k != "tied_head.weight"}
    model = load_weights(TinyNet(tied=True), state)
    assert torch.equal(model.tied_head.weight, source.head.weight)
    assert model.tied_head.weight is model.head.weight


# ---------------------------------------------------------------------------------------------- checkpoints


def test_load_checkpoint_reads_plain_tensors_and_extracts_a_sub_module(tmp_path):
    pipeline = _seeded(Pipeline())
    state = {f"{k}": v for k, v in pipeline.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"lr": 0.1}}, tmp_path / "last.ckpt")

    checkpoint = load_checkpoint(tmp_path / "last.ckpt")
    assert checkpoint["epoch"] == 3 and checkpoint["hyper_parameters"] == {"lr": 0.1}
    encoder_state = state_dict_from_checkpoint(checkpoint, "volume_encoder.")
    assert set(encoder_state) == set(TinyNet().state_dict())
    model = load_weights(TinyNet(), encoder_state)
    assert torch.equal(model.head.weight, pipeline.volume_encoder.head.weight)
    assert set(state_dict_from_checkpoint(tmp_path / "last.ckpt")) == set(state)  # path, no prefix: all keys


def test_load_checkpoint_refuses_pickled_custom_objects(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "config": PickledConfig()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to unpickle .*evil\.ckpt.*PickledConfig") as caught:
        load_checkpoint(path)
    assert len(str(caught.value)) < 600  # ours, not torch's page-long message


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsFileError, match="junk.ckpt"):
        load_checkpoint(tmp_path / "junk.ckpt")
    with pytest.raises(WeightsFileError, match="not a Lightning checkpoint"):
        state_dict_from_checkpoint({"model": {}}, "volume_encoder.")


# ---------------------------------------------------------------------------------------------- TorchScript


@pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*deprecated:DeprecationWarning")
@pytest.mark.parametrize("wrapper", [TinyNet, TupleOutput, DictOutput])
def test_torchscript_export_matches_module(tmp_path, volume, wrapper):
    module = _seeded(wrapper())
    path = export_torchscript(module, (volume,), tmp_path / "net.pt")

    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]
    loaded = torch.jit.load(str(path))
    with torch.no_grad(), eval_mode(module):
        expected, found = module(volume), loaded(volume)
    if isinstance(expected, dict):
        assert list(found) == ["logits", "embedding"]
        expected, found = list(expected.values()), list(found.values())
    torch.testing.assert_close(found, expected, atol=1e-6, rtol=1e-5)


def test_torchscript_script_method(tmp_path, volume):
    module = _seeded(TinyNet())
    difference = verify_torchscript(export_torchscript(module, (volume,), tmp_path / "s.pt", method="script"),
                                    module, (volume,))
    assert difference < 1e-5


def test_export_restores_each_sub_module_mode(tmp_path, volume):
    module = _seeded(TinyNet())
    module.train()
    module.encoder.eval()  # e.g. a frozen backbone inside a training model
    export_torchscript(module, (volume,), tmp_path / "net.pt")
    assert module.training and module.dropout.training and module.head.training
    assert not module.encoder.training and not module.encoder[0].training


@pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*deprecated:DeprecationWarning")
def test_torchscript_parity_check_can_fail(tmp_path, volume):
    module = _seeded(TinyNet())
    path = export_torchscript(module, (volume,), tmp_path / "net.pt")
    corrupted = torch.jit.load(str(path))
    with torch.no_grad():
        corrupted.head.bias.add_(0.5)
    torch.jit.save(corrupted, str(path))

    with pytest.raises(ExportParityError) as caught:
        verify_torchscript(path, module, (volume,))
    assert caught.value.max_abs_diff == pytest.approx(0.5, rel=1e-4)
    assert "0.5" in str(caught.value)

    with pytest.raises(ExportParityError):
        export_torchscript(_seeded(TraceDivergentNet()), (volume,), tmp_path / "divergent.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]  # nothing published, no temp files


def test_export_rejects_bad_arguments(tmp_path, volume):
    module = TinyNet()
    with pytest.raises(ValueError, match=r"\(x,\)"):
        export_torchscript(module, volume, tmp_path / "net.pt")
    with pytest.raises(ValueError, match="method"):
        export_torchscript(module, (volume,), tmp_path / "net.pt", method="compile")
    with pytest.raises(ValueError, match="atol"):
        export_torchscript(module, (volume,), tmp_path / "net.pt", atol=-1.0)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(module, (volume,), tmp_path / "net.onnx", input_names=["v"], output_names=["y"], opset=17)
    with pytest.raises(ValueError, match="input_names"):
        export_onnx(module, (volume,), tmp_path / "net.onnx", input_names=["v", "w"], output_names=["y"])
    with pytest.raises(ValueError, match="2 tensors"):
        export_onnx(DictOutput(), (volume,), tmp_path / "net.onnx", input_names=["v"], output_names=["y"])
    with pytest.raises(ValueError, match="batchsize"):
        export_onnx(module, (volume,), tmp_path / "net.onnx", input_names=["v"], output_names=["y"],
                    dynamic_axes={"batchsize": [0]})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- ONNX


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    """One dynamic-batch ONNX export shared by the ONNX tests (each export takes about a second)."""
    module = _seeded(DictOutput())
    module.train()
    volume = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    path = export_onnx(
        module, (volume,), tmp_path_factory.mktemp("onnx") / "net.onnx",
        input_names=["volume"], output_names=["logits", "embedding"],
        dynamic_axes={"volume": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}},
    )
    return module, volume, path


def test_onnx_export_matches_module_on_another_batch_size(onnx_export):
    module, _, path = onnx_export
    assert module.training and module.net.dropout.training  # mode restored
    assert [p.name for p in path.parent.iterdir()] == ["net.onnx"]
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in graph.output] == ["logits", "embedding"]

    volumes = torch.randn(3, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, embedding = session.run(None, {"volume": volumes.numpy()})
    with torch.no_grad(), eval_mode(module):
        expected = module(volumes)
    torch.testing.assert_close(torch.from_numpy(logits), expected["logits"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(embedding), expected["embedding"], atol=1e-5, rtol=1e-4)


def test_onnx_parity_check_can_fail(onnx_export, tmp_path):
    module, volume, path = onnx_export
    assert verify_onnx(path, module, (volume,)) < 1e-4
    model = onnx.load(str(path))
    for initializer in model.graph.initializer:
        array = numpy_helper.to_array(initializer)
        if array.dtype.kind == "f":
            initializer.CopyFrom(numpy_helper.from_array(array + 0.25, initializer.name))
    corrupted = tmp_path / "corrupted.onnx"
    onnx.save(model, str(corrupted))

    with pytest.raises(ExportParityError) as caught:
        verify_onnx(corrupted, module, (volume,))
    assert caught.value.max_abs_diff > 0.1


def test_onnx_export_fails_and_publishes_nothing_when_outputs_differ(tmp_path, volume):
    with pytest.raises(ExportParityError, match="max \\|difference\\|"):
        export_onnx(_seeded(TraceDivergentNet()), (volume,), tmp_path / "net.onnx",
                    input_names=["volume"], output_names=["logits"])
    assert list(tmp_path.iterdir()) == []


def test_onnx_export_rejects_a_batch_axis_frozen_by_the_model(tmp_path, volume):
    with pytest.raises(ExportParityError, match="fixed 'logits' axis 0 to size 1"):
        export_onnx(_seeded(BatchBranchNet()), (volume,), tmp_path / "net.onnx", input_names=["volume"],
                    output_names=["logits"], dynamic_axes={"volume": {0: "batch"}, "logits": {0: "batch"}})
    with pytest.raises(ExportParityError, match="PyTorch module itself fails at batch size 2"):
        export_onnx(_seeded(BatchOneOnlyNet()), (volume,), tmp_path / "net.onnx",
                    input_names=["volume"], output_names=["logits"], dynamic_axes={"volume": {0: "batch"}})
    assert list(tmp_path.iterdir()) == []


def test_exported_files_are_readable_by_others(tmp_path):
    """safetensors writes 0600 files; an export is for other users' pipelines: 0644 under umask 022."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        path = save_weights(_seeded(TinyNet()), tmp_path / "w.safetensors")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
