"""Config checks: wrong override types / ranges fail when the config is composed, naming key, value and rule."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from common.config_checks import CHECKS, ConfigValueError, Number, check_config
from common.lightning.runner import run


def _compose(name: str, *overrides: str):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.mark.parametrize("name", ["medvl_train", "scene3d_train", "medvl_evaluate", "medvl_segment"])
def test_the_shipped_configs_pass(name):
    check_config(_compose(name))


@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc': not a number; allowed: an integer >= -1"),
    ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5: not an integer"),
    ("trainer.max_epochs=-3", "trainer.max_epochs=-3: too small"),
    ("model.optimizer.lr=-0.001", "model.optimizer.lr=-0.001: too small; allowed: a number > 0"),
    ("model.optimizer.lr=0", "model.optimizer.lr=0: too small"),
    ("model.optimizer.lr=nan", "model.optimizer.lr=nan: not finite"),
    ("data.batch_size=-4", "data.batch_size=-4: too small; allowed: an integer >= 1"),
    ("data.batch_size=eight", "data.batch_size='eight': not a number"),
    ("data.num_workers=-1", "data.num_workers=-1: too small"),
    ("data.val_fraction=1.5", "data.val_fraction=1.5: too large"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0: too small"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0: too small"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1: too small"),
    ("model.loss_weights.text_mlm=-1", "model.loss_weights.text_mlm=-1: too small"),
    ("test=yes", "test='yes': not a boolean"),
    ("seed=-1", "seed=-1: too small"),
])
def test_bad_overrides_are_refused_with_key_value_and_rule(override, expected):
    with pytest.raises(ConfigValueError) as info:
        check_config(_compose("medvl_train", override))
    assert expected in str(info.value)


def test_every_bad_value_is_listed_at_once():
    with pytest.raises(ConfigValueError) as info:
        check_config(_compose("scene3d_train", "trainer.max_epochs=abc", "model.optimizer.lr=-1", "data.batch_size=0"))
    message = str(info.value)
    assert "trainer.max_epochs" in message and "model.optimizer.lr" in message and "data.batch_size" in message


def test_special_values_are_allowed():
    check_config(_compose("medvl_train", "trainer.max_epochs=-1", "trainer.max_steps=-1", "seed=null",
                          "trainer.check_val_every_n_epoch=null", "+trainer.limit_train_batches=0.5"))
    check_config(OmegaConf.create({"trainer": {"devices": "auto"}}))
    with pytest.raises(ConfigValueError, match="'all'"):
        check_config(OmegaConf.create({"trainer": {"devices": "all"}}))


def test_an_unresolvable_checked_value_is_reported_with_its_key():
    with pytest.raises(ConfigValueError, match="data.batch_size: cannot be resolved"):
        check_config(OmegaConf.create({"data": {"batch_size": "${nowhere.size}"}}))


def test_rules_are_a_table_and_custom_tables_work():
    assert isinstance(CHECKS["model.optimizer.lr"], Number)
    check_config({"a": {"b": 3}}, checks={"a.*": Number(integer=True, high=3)})
    with pytest.raises(ConfigValueError, match=r"a.b=4: too large; allowed: an integer <= 3"):
        check_config({"a": {"b": 4}}, checks={"a.*": Number(integer=True, high=3)})


def test_the_runner_refuses_before_building_or_writing_anything(toy_cfg):
    cfg = toy_cfg("trainer.max_epochs=abc")
    with pytest.raises(ConfigValueError, match="trainer.max_epochs='abc'"):
        run(cfg)
    assert not Path(cfg.paths.output_dir).exists()


def test_entry_points_check_their_config(tmp_path):
    from medvl.evaluate import evaluate
    from medvl.segment import segment

    with pytest.raises(ConfigValueError, match="data.batch_size=0"):
        evaluate(_compose("medvl_evaluate", "data.batch_size=0", "ckpt_path=x.ckpt"))
    with pytest.raises(ConfigValueError, match="model.optimizer.lr=-1"):
        segment(_compose("medvl_segment", "model.optimizer.lr=-1", f"paths.root_dir={tmp_path}"))
    assert not (tmp_path / "data").exists()
