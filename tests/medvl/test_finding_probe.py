"""The supervised finding probe learns a visible finding and fails cleanly on bad arguments."""
from __future__ import annotations

import pytest
import torch

from medvl.evaluation.finding_probe import FindingProbe, main, train_finding_probe


def _cubes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise volumes (n, 1, 32, 32, 32) with an 8^3 cube somewhere: bright (label 1) or dark (label 0)."""
    g = torch.Generator().manual_seed(seed)
    images = 0.3 + 0.05 * torch.randn(n, 1, 32, 32, 32, generator=g)
    labels = (torch.rand(n, generator=g) < 0.5).float()
    for i in range(n):
        x, y, z = torch.randint(0, 24, (3,), generator=g).tolist()
        images[i, 0, x:x + 8, y:y + 8, z:z + 8] += 0.2 if labels[i] else -0.2
    return images, labels[:, None]


@pytest.mark.parametrize("backbone", ["vit", "cnn"])
def test_probe_learns_a_visible_finding_and_reports_val_auroc(backbone):
    torch.manual_seed(0)
    train, val = _cubes(48, seed=0), _cubes(24, seed=1)
    model = FindingProbe(backbone, (32, 32, 32), num_findings=1, embed_dim=16)
    rows = train_finding_probe(model, train, val, ["cube"], steps=40, eval_every=20, lr=3e-3)
    assert [r["step"] for r in rows] == [20, 40]
    assert set(rows[-1]) == {"step", "train_loss", "auroc/cube", "auroc/mean"}
    assert rows[-1]["auroc/cube"] > 0.9
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # it trains (mean loss of steps 21-40 vs 1-20)


def test_probe_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--steps", "0"])
    assert exit_info.value.code == 2 and "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--backbone", "resnet"])


def test_reference_cnn_tokens_cover_the_volume_at_one_eighth():
    from medvl.evaluation.finding_probe import ReferenceCNN

    tokens = ReferenceCNN(out_dim=8)(torch.zeros(2, 1, 32, 16, 24))
    assert tokens.shape == (2, 4 * 2 * 3, 8)
