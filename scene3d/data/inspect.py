"""Look at one ScanNet-format scene folder: its objects, classes, scene-graph relations and a top-down picture.

    python -m scene3d.data.inspect SCENE_DIR [--out PNG] [--label-map TSV] [--k K]

Prints three tables (objects: id, raw label, ScanRefer class, #points, box centre / size; class counts; relation
counts of the scene graph built by `scene_graph.build_scene_graph_for_scene`) and writes a top-down PNG
(default `<SCENE_DIR>/<scene>_topdown.png`): every object's axis-aligned box as a rectangle in the x-y plane,
coloured by ScanRefer class and labelled "<object_id> <raw label>", plus the scene-graph edges of
`PLOT_RELATIONS` as lines between box centres (an `on` edge as an arrow from the object on top to its support;
`near` once per unordered pair). A folder that cannot be read gives one line on stderr naming the path and
exit code 2.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from torch_geometric.data import Data

from scene3d.data.labels import SCANREFER_CLASS_TO_ID, SCANREFER_CLASSES
from scene3d.data.scannet import Scene, SceneReadError, read_scannet_scene
from scene3d.data.scene_graph import RELATIONS, SceneGraphConfig, build_scene_graph_for_scene, relation_triplets

EXIT_BAD_INPUT = 2
# Relation -> line colour in the picture. `on` is directed (subject on object); `near` is symmetric.
PLOT_RELATIONS: dict[str, str] = {"on": "crimson", "near": "dimgray"}
_DIRECTED_PLOT_RELATIONS = {"on"}


def relation_counts(graph: Data) -> Counter[str]:
    """Number of directed edges carrying each relation (every name of RELATIONS is present, 0 when unused)."""
    counts: Counter[str] = Counter({name: 0 for name in RELATIONS})
    counts.update(relation for _, relation, _ in relation_triplets(graph))
    return counts


def class_counts(scene: Scene) -> Counter[str]:
    """Number of objects per ScanRefer class, most frequent first when iterated with `most_common`."""
    return Counter(obj.scanrefer_class for obj in scene.objects)


def plot_top_down(scene: Scene, graph: Data, path: str | Path) -> Path:
    """Write the top-down PNG of `scene` with the `PLOT_RELATIONS` edges of `graph` (built from the same scene).

    Args:
        scene: the scene; node i of `graph` must be `scene.objects[i]`.
        graph: from `build_scene_graph_for_scene(scene)`.
        path: the PNG to write (its folder must exist).

    Returns:
        `path` as a Path.

    Raises:
        ValueError: `graph` has another number of nodes than `scene` has objects.
        OSError: the file cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    if graph.num_nodes != len(scene.objects):
        raise ValueError(f"graph has {graph.num_nodes} nodes but scene {scene.scene_id} has {len(scene.objects)} "
                         "objects; build the graph with build_scene_graph_for_scene(scene)")
    path = Path(path)
    palette = matplotlib.colormaps["tab20"]
    class_color = {name: palette(index % palette.N) for index, name in enumerate(SCANREFER_CLASSES)}
    figure, axes = plt.subplots(figsize=(9, 9))
    # Largest footprints first, so that floors and tables do not hide what stands on them.
    order = sorted(range(len(scene.objects)), key=lambda i: -float(np.prod(scene.objects[i].size[:2])))
    for index in order:
        obj = scene.objects[index]
        color = class_color[obj.scanrefer_class]
        axes.add_patch(Rectangle(
            (float(obj.box_min[0]), float(obj.box_min[1])), float(obj.size[0]), float(obj.size[1]),
            facecolor=(*color[:3], 0.25), edgecolor=color, linewidth=1.5,
        ))
        axes.annotate(f"{obj.object_id} {obj.label}", (float(obj.center[0]), float(obj.center[1])), fontsize=7,
                      ha="center", va="center")
    centers = graph.pos.numpy()
    for subject, relation, obj in relation_triplets(graph):
        if relation not in PLOT_RELATIONS or (relation not in _DIRECTED_PLOT_RELATIONS and subject > obj):
            continue
        start, end = centers[subject, :2], centers[obj, :2]
        if relation in _DIRECTED_PLOT_RELATIONS:
            axes.annotate("", xy=tuple(end), xytext=tuple(start),
                          arrowprops={"arrowstyle": "->", "color": PLOT_RELATIONS[relation], "linewidth": 1.5})
        else:
            axes.plot(*zip(start, end), color=PLOT_RELATIONS[relation], linewidth=0.8, alpha=0.6)
    low = np.min([obj.box_min[:2] for obj in scene.objects], axis=0)
    high = np.max([obj.box_max[:2] for obj in scene.objects], axis=0)
    margin = 0.05 * float(max(high - low).max()) + 0.1
    axes.set_xlim(low[0] - margin, high[0] + margin)
    axes.set_ylim(low[1] - margin, high[1] + margin)
    axes.set_aspect("equal")
    axes.set_xlabel("x (m)")
    axes.set_ylabel("y (m)")
    axes.set_title(f"{scene.scene_id}: {len(scene.objects)} objects, top view")
    handles = [Line2D([], [], color=color, label=f"{name} edge") for name, color in PLOT_RELATIONS.items()]
    handles += [Patch(facecolor=class_color[name], label=name)
                for name in sorted(class_counts(scene), key=SCANREFER_CLASS_TO_ID.__getitem__)]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=120)
    finally:
        plt.close(figure)
    return path


def print_report(scene: Scene, graph: Data, console: Console) -> None:
    """Print the object, class-count and relation-count tables of `scene` and its `graph`."""
    objects = Table(title=f"{scene.scene_id}: {len(scene.objects)} objects, {scene.meta.get('n_vertices')} vertices "
                          f"(axis alignment: {scene.meta.get('axis_alignment_source')})")
    for column in ("id", "raw label", "ScanRefer class", "#points", "centre x y z (m)", "size x y z (m)"):
        objects.add_column(column, justify="left" if "label" in column or "class" in column else "right")
    for obj in scene.objects:
        objects.add_row(str(obj.object_id), obj.label, obj.scanrefer_class, str(obj.points.shape[0]),
                        " ".join(f"{v:.2f}" for v in obj.center), " ".join(f"{v:.2f}" for v in obj.size))
    console.print(objects)

    classes = Table(title="ScanRefer classes")
    classes.add_column("class")
    classes.add_column("objects", justify="right")
    for name, count in class_counts(scene).most_common():
        classes.add_row(name, str(count))
    console.print(classes)

    counts = relation_counts(graph)
    relations = Table(title="scene-graph relations (directed edges)")
    relations.add_column("relation")
    relations.add_column("edges", justify="right")
    for name in RELATIONS:
        relations.add_row(name, str(counts[name]))
    console.print(relations)
    console.print(f"scene graph: {graph.num_nodes} nodes, {graph.edge_index.shape[1]} directed edges")
    if scene.meta.get("skipped_objects"):
        console.print(f"skipped objects: {scene.meta['skipped_objects']}")
    if scene.meta.get("unknown_label_counts"):
        console.print(f"labels missing from the label map (class 'others'): {scene.meta['unknown_label_counts']}")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scene3d.data.inspect",
        description="Print a ScanNet-format scene's objects, classes and scene-graph relations, and draw it from "
                    "above.",
    )
    parser.add_argument("scene_dir", type=Path, help="scene folder, e.g. scans/scene0000_00")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG to write (default: <SCENE_DIR>/<scene>_topdown.png)")
    parser.add_argument("--label-map", type=Path, default=None,
                        help="scannetv2-labels.combined.tsv (default: the copy inside the open3d wheel)")
    parser.add_argument("--k", type=int, default=SceneGraphConfig.k,
                        help=f"kNN edge limit per object (default: {SceneGraphConfig.k}); 0 keeps all pairs")
    args = parser.parse_args(argv)
    if args.k < 0:
        parser.error(f"--k must be >= 0 (0 keeps all pairs), got {args.k}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, or 2 when the scene cannot be read or the PNG written)."""
    args = _parse_args(argv)
    console = Console()
    if not console.is_terminal:  # piped: rich would squeeze the tables into 80 columns
        console = Console(width=160)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scene = read_scannet_scene(args.scene_dir, label_map_path=args.label_map)
        graph = build_scene_graph_for_scene(scene, config=SceneGraphConfig(k=args.k or None))
        print_report(scene, graph, console)
        for warning in caught:
            console.print(f"note: {warning.message}")
        out = args.out if args.out is not None else args.scene_dir / f"{scene.scene_id}_topdown.png"
        try:
            plot_top_down(scene, graph, out)
        except OSError as error:
            raise SceneReadError(f"{out}: cannot write the PNG ({error.strerror or error})") from error
    except (SceneReadError, ValueError) as error:  # SceneReadError names the file; ValueError: graph building
        print(f"error: {args.scene_dir}: {error}" if str(args.scene_dir) not in str(error) else f"error: {error}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
