"""Figure of masked object modelling: top-down view of scenes, objects coloured by true and by predicted class."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_masked_object_predictions"]


def plot_masked_object_predictions(scenes: Sequence[Mapping[str, Any]], class_names: Sequence[str],
                                   path: str | Path) -> Path:
    """Draw each scene twice from above: boxes filled with the true class (left) and the predicted class (right).

    Every scored object was masked on its own (leave-one-out) and predicted from its position and context.
    Unscored objects (room structure) are drawn as grey outlines; wrong predictions get a thick red edge.

    Args:
        scenes: dicts with scene_id (str), centers (N, 3), sizes (N, 3), true (N,) class ids and predicted (N,)
            class ids, -1 where the object was not scored.
        class_names: name of every class id.
        path: the PNG to write (folders are created).

    Returns:
        the path written.

    Raises:
        ValueError: no scene, or arrays of mismatched lengths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    if not scenes:
        raise ValueError("no scene to draw")
    palette = plt.get_cmap("tab20")
    colour = {k: palette(k % 20) for k in range(len(class_names))}
    fig, axes = plt.subplots(len(scenes), 2, figsize=(10, 4.6 * len(scenes)), squeeze=False)
    used: set[int] = set()
    for row, scene in zip(axes, scenes):
        centers, sizes = np.asarray(scene["centers"]), np.asarray(scene["sizes"])
        true, predicted = np.asarray(scene["true"]), np.asarray(scene["predicted"])
        if not len(centers) == len(sizes) == len(true) == len(predicted):
            raise ValueError(f"scene {scene.get('scene_id')}: centers, sizes, true and predicted differ in length")
        scored = predicted >= 0
        accuracy = float((predicted[scored] == true[scored]).mean()) if scored.any() else float("nan")
        # big boxes first so that small objects on top of them stay visible
        order = np.argsort(-(sizes[:, 0] * sizes[:, 1]))
        panels = ((row[0], true, "true class"), (row[1], predicted, "predicted (masked, leave-one-out)"))
        for ax, labels, title in panels:
            for n in order:
                corner = centers[n, :2] - sizes[n, :2] / 2
                width, depth = max(float(sizes[n, 0]), 0.03), max(float(sizes[n, 1]), 0.03)
                if not scored[n]:
                    ax.add_patch(Rectangle(corner, width, depth, fill=False, edgecolor="0.7", linewidth=0.8))
                    continue
                wrong = ax is row[1] and predicted[n] != true[n]
                used.add(int(labels[n]))
                ax.add_patch(Rectangle(corner, width, depth, facecolor=colour[int(labels[n])], alpha=0.85,
                                       edgecolor="red" if wrong else "black", linewidth=2.5 if wrong else 0.6))
            low = (centers[:, :2] - sizes[:, :2] / 2).min(axis=0) - 0.2
            high = (centers[:, :2] + sizes[:, :2] / 2).max(axis=0) + 0.2
            ax.set_xlim(low[0], high[0])
            ax.set_ylim(low[1], high[1])
            ax.set_aspect("equal")
            ax.set_title(f"{scene.get('scene_id', '')}: {title}" + (f", acc {accuracy:.2f}" if ax is row[1] else ""),
                         fontsize=9)
            ax.set_xlabel("x (m)")
            ax.set_ylabel("y (m)")
    handles = [Patch(facecolor=colour[k], label=class_names[k]) for k in sorted(used)]
    handles.append(Patch(facecolor="white", edgecolor="red", linewidth=2.5, label="wrong prediction"))
    columns = min(6, len(handles))
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8)
    legend_rows = -(-len(handles) // columns)
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, (0.15 + 0.22 * legend_rows) / height, 1, 1))  # inches reserved for the legend
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
