"""PNG figures of a test run: the volume -> report similarity matrix, retrieval and pointing examples."""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medvl.data.transforms import check_orientation_code


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slice_axes(orientation: str) -> tuple[int, int]:
    """(axial, coronal) axis of a volume in this orientation code: where S/I and A/P are ("RAS" -> (2, 1)).

    Raises:
        ValueError: not a valid axis code (``check_orientation_code``).
    """
    check_orientation_code(orientation)
    code = orientation.upper()
    return next(i for i, c in enumerate(code) if c in "SI"), next(i for i, c in enumerate(code) if c in "AP")


def plot_similarity_matrix(similarity: np.ndarray, path: str | Path, max_items: int = 64) -> Path:
    """Heat map of cosine similarities (rows: volumes, columns: reports; the diagonal holds the true pairs).

    Shapes:
        similarity: (N, N); only the first `max_items` rows/columns are drawn.
    """
    plt = _pyplot()
    sim = np.asarray(similarity)[:max_items, :max_items]
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    image = ax.imshow(sim, cmap="viridis", interpolation="nearest")
    ax.set_xlabel("report (test split)")
    ax.set_ylabel("volume (test split)")
    ax.set_title(f"volume -> report cosine similarity ({sim.shape[0]} pairs)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_retrieval_examples(slices: Sequence[np.ndarray], reports: Sequence[str], similarity: np.ndarray,
                            path: str | Path, num_examples: int = 4, top_k: int = 3) -> Path:
    """For a few volumes: an axial and a coronal slice beside their top-k retrieved reports (true one marked).

    Args:
        slices: per volume a (2, H, W) array: mid axial and mid coronal slice, intensities in [0, 1] (drawn turned
            by np.rot90: for RAS volumes anterior / superior up).
        reports: report text of each pair (index i belongs to volume i).
        similarity: (N, N) volume x report similarities.
    """
    plt = _pyplot()
    n = min(num_examples, len(slices))
    fig, axes = plt.subplots(n, 3, figsize=(14, 3.3 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 3.2]})
    for row in range(n):
        axial, coronal = slices[row]
        axes[row, 0].imshow(np.rot90(axial), cmap="gray", vmin=0, vmax=1)
        axes[row, 1].imshow(np.rot90(coronal), cmap="gray", vmin=0, vmax=1)
        for ax, title in ((axes[row, 0], f"volume {row}: axial"), (axes[row, 1], "coronal")):
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        order = np.argsort(-similarity[row])[:top_k]
        lines = []
        for rank, j in enumerate(order, 1):
            mark = "  <- true report" if j == row else ""
            text = textwrap.shorten(" ".join(reports[j].split()), width=260, placeholder=" ...")
            lines.append(f"#{rank} (sim {similarity[row, j]:.2f}){mark}\n" + textwrap.fill(text, width=110))
        axes[row, 2].text(0.0, 1.0, "\n\n".join(lines), va="top", ha="left", fontsize=7.5, family="monospace",
                          transform=axes[row, 2].transAxes)
        axes[row, 2].axis("off")
    fig.suptitle("top-3 retrieved reports per test volume")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_pointing_examples(examples: Sequence[dict], path: str | Path, max_examples: int = 6) -> Path:
    """Finding sentences' attention on the axial slice through its peak, with the organ outlined.

    Args:
        examples: dicts with "image", "attention", "organ" ((H, W) arrays of that slice: intensities in [0, 1],
            the upsampled attention, the organ mask as 0 / 1; drawn turned by np.rot90: for RAS volumes anterior
            up, patient left on the left), "peak" ((h, w) of the peak in that slice), "slice" (the axial index),
            "sentence", "organ_name" and "hit" (whether the peak is in the organ).
    """
    plt = _pyplot()
    n = min(max_examples, len(examples))
    if n == 0:
        raise ValueError("plot_pointing_examples needs at least one example")
    columns = min(3, n)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 5.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, example in zip(axes.flat, examples[:n]):
        ax.imshow(np.rot90(example["image"]), cmap="gray", vmin=0, vmax=1)
        ax.imshow(np.rot90(example["attention"]), cmap="inferno", alpha=0.45)
        ax.contour(np.rot90(example["organ"]).astype(float), levels=[0.5], colors=["cyan"], linewidths=1.0)
        h, w = example["peak"]
        # np.rot90 moves element (h, w) of an (H, W) slice to row W - 1 - w, column h
        ax.plot([h], [example["image"].shape[1] - 1 - w], marker="x", color="lime", markersize=10, mew=2)
        verdict = "hit" if example["hit"] else "miss"
        ax.set_title(f"{example['organ_name']} (cyan): {verdict}, axial slice {example['slice']}\n"
                     + textwrap.fill(example["sentence"], width=48), fontsize=7.5)
    fig.suptitle("pointing: attention of finding sentences (x = peak)")
    fig.tight_layout(h_pad=2.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
