from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from common.lightning.vlp_module import VLPModule, sum_losses, warmup_cosine_schedule


def test_sum_losses_sums_only_loss_terms():
    out = {"a_loss": torch.tensor(1.5), "b_loss": torch.tensor(2.0), "acc": torch.tensor(0.9)}
    assert sum_losses(out).item() == pytest.approx(3.5)


@pytest.mark.parametrize("outputs, match", [
    ({"acc": torch.tensor(1.0)}, "no '\\*_loss'"),
    ({"a_loss": torch.tensor(float("nan"))}, "not finite"),
    ({"a_loss": torch.ones(3)}, "scalar"),
])
def test_sum_losses_errors(outputs, match):
    with pytest.raises(ValueError, match=match):
        sum_losses(outputs)


class _Tiny(VLPModule):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.lin = nn.Linear(3, 2)
        self.norm = nn.LayerNorm(2)


def test_parameter_groups_exclude_bias_and_norm_from_decay():
    groups = _Tiny().parameter_groups(weight_decay=0.1)
    assert [p.shape for p in groups[0]["params"]] == [torch.Size([2, 3])]
    assert groups[0]["weight_decay"] == 0.1
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 3


def test_lr_scales_multiply_the_learning_rate_of_the_named_submodule_through_the_schedule():
    module = _Tiny(optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05),
                   scheduler=functools.partial(warmup_cosine_schedule, warmup_steps=2), lr_scales={"lin": 0.1})

    class _T:
        estimated_stepping_batches = 10
    module._trainer = _T()
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lin = {id(p) for p in module.lin.parameters()}
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    for group in optimizer.param_groups:
        in_lin = {id(p) in lin for p in group["params"]}
        assert len(in_lin) == 1  # a group never mixes scaled and unscaled parameters
        expected_scale = 0.1 if in_lin == {True} else 1.0
        others = [g for g in optimizer.param_groups if g.get("lr_scale", 1.0) == 1.0]
        assert group["lr"] == pytest.approx(expected_scale * others[0]["lr"])
    decay = {g["weight_decay"] for g in optimizer.param_groups if any(p.ndim > 1 for p in g["params"])}
    assert decay == {0.05}  # the decay split survives the lr split


@pytest.mark.parametrize("scales, match", [({"lin": -1.0}, "finite and >= 0"), ({"missing": 0.5}, "match no")])
def test_lr_scales_errors(scales, match):
    with pytest.raises(ValueError, match=match):
        _Tiny(lr_scales=scales).parameter_groups()


def test_optimizer_and_scheduler_from_partials():
    module = _Tiny(optimizer=functools.partial(torch.optim.SGD, lr=0.5),
                   scheduler=functools.partial(warmup_cosine_schedule, warmup_steps=2))

    class _T:
        estimated_stepping_batches = 10
    module._trainer = _T()  # what Lightning sets; only estimated_stepping_batches is read
    conf = module.configure_optimizers()
    assert isinstance(conf["optimizer"], torch.optim.SGD)
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(10):
        lrs.append(conf["optimizer"].param_groups[0]["lr"])
        conf["optimizer"].step()
        conf["lr_scheduler"]["scheduler"].step()
    assert lrs[0] == pytest.approx(0.25) and lrs[1] == pytest.approx(0.5)  # linear warm-up
    assert lrs[-1] < 0.05  # cosine decay to ~0 at total_steps=10


def test_warmup_cosine_known_values():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine_schedule(opt, warmup_steps=0, total_steps=4, min_lr_ratio=0.0)
    values = []
    for _ in range(5):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(5)]
    assert values == pytest.approx(expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="scheduler_interval"):
        _Tiny(scheduler_interval="batch")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_cosine_schedule(opt, total_steps=None)
