"""ClipInfoNCELoss under a real 2-process gloo group on CPU equals one process on the concatenated batch.

Each rank encodes its slice of one global batch with identical tiny linear encoders, computes the loss
with features gathered from both ranks, back-propagates and averages the gradients over ranks exactly as
DDP does. Compared with a single process on the whole batch: the mean of the ranks' losses and the averaged
gradients (encoder weights and the logit scale) must match. With unequal per-rank batches the reference is
the per-row mean over the whole global batch (the loss weights each rank by its share of rows; a plain
mean of per-rank means would differ, which the test also checks so that the comparison is meaningful).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

from common.distributed import world_info
from common.losses.contrastive import ClipInfoNCELoss
from tests.common.test_distributed import run_on_gloo_ranks

IN_A, IN_B, DIM = 5, 4, 3
# name -> (rows per rank, label smoothing)
SCENARIOS = {"equal": ((3, 3), 0.0), "unequal": ((4, 2), 0.0), "unequal_smoothed": ((4, 2), 0.1)}


def _setup(rows: tuple[int, ...], smoothing: float) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Identical model (two linear encoders + the loss) and global batch on every process."""
    generator = torch.Generator().manual_seed(7)
    inputs_a = torch.randn(sum(rows), IN_A, generator=generator)
    inputs_b = torch.randn(sum(rows), IN_B, generator=generator)
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "enc_a": nn.Linear(IN_A, DIM),
            "enc_b": nn.Linear(IN_B, DIM),
            "loss": ClipInfoNCELoss(label_smoothing=smoothing),
        }
    )
    return model, inputs_a, inputs_b


def _loss_and_grads(model: nn.Module, inputs_a: torch.Tensor, inputs_b: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    loss = model["loss"](model["enc_a"](inputs_a), model["enc_b"](inputs_b))["contrastive_loss"]
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def _ddp_worker() -> dict[str, Any]:
    rank, world_size = world_info()
    results = {}
    for name, (rows, smoothing) in SCENARIOS.items():
        model, inputs_a, inputs_b = _setup(rows, smoothing)
        local = slice(sum(rows[:rank]), sum(rows[: rank + 1]))
        loss, grads = _loss_and_grads(model, inputs_a[local], inputs_b[local])
        for grad in [loss, *grads.values()]:  # DDP: gradients all-reduced and divided by the world size
            dist.all_reduce(grad)
            grad /= world_size
        results[name] = {"loss": loss, "grads": grads}
    return results


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_on_gloo_ranks(_ddp_worker, 2, tmp_path_factory.mktemp("ddp"))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_two_ranks_match_single_process(rank_results: list[dict[str, Any]], scenario: str) -> None:
    rows, smoothing = SCENARIOS[scenario]
    model, inputs_a, inputs_b = _setup(rows, smoothing)
    ref_loss, ref_grads = _loss_and_grads(model, inputs_a, inputs_b)
    assert set(ref_grads) == {"enc_a.weight", "enc_a.bias", "enc_b.weight", "enc_b.bias", "loss.log_logit_scale"}
    for result in rank_results:
        torch.testing.assert_close(result[scenario]["loss"], ref_loss)
        assert result[scenario]["grads"].keys() == ref_grads.keys()
        for name, grad in ref_grads.items():
            assert grad.abs().sum() > 0, name
            torch.testing.assert_close(result[scenario]["grads"][name], grad, msg=f"{scenario}: gradient of {name}")


def test_unequal_batches_need_the_row_weighting() -> None:
    """Guard for the test above: with (4, 2) rows the mean of per-rank mean losses is not the global mean."""
    rows, _ = SCENARIOS["unequal"]
    model, inputs_a, inputs_b = _setup(rows, 0.0)
    with torch.no_grad():
        loss_fn = model["loss"]
        logits = loss_fn.similarity(model["enc_a"](inputs_a), model["enc_b"](inputs_b))
        labels = torch.arange(sum(rows))
        per_row = (
            nn.functional.cross_entropy(logits, labels, reduction="none")
            + nn.functional.cross_entropy(logits.T, labels, reduction="none")
        ) / 2
        mean_of_rank_means = (per_row[: rows[0]].mean() + per_row[rows[0] :].mean()) / 2
        global_mean = loss_fn(model["enc_a"](inputs_a), model["enc_b"](inputs_b))["contrastive_loss"]
    torch.testing.assert_close(per_row.mean(), global_mean)
    assert abs(mean_of_rank_means - global_mean) > 1e-3
