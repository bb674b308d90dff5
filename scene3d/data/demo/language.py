"""Language about a demo scene, generated from its scene graph: referring expressions, QA pairs, captions.

Facts: each referable object (every object but floor and walls) has a noun (its raw label), a named colour
and an axis-aligned box; relations between objects are the triplets of `scene3d.data.scene_graph`'s
`build_scene_graph` over those boxes (all pairs, `k=None`), with the generator's own support facts added as
ground truth ("supported by" -> `on`; a pillow lies on a mattress below the headboard's top, which the
box-based `on` cannot see).

Referring expressions are structured `Query`s rendered to text. Their meaning (`resolve`):
1. candidates = objects with the query's noun (and colour, when given);
2. `extreme` keeps the candidate that is `bigger_than` / `smaller_than` ("largest" / "smallest") or, for a
   viewer facing the `facing` object, `view_left_of` / `view_right_of` ("left" / "right") every other
   candidate;
3. `relation` keeps candidates with that relation to at least one object with `anchor_noun` (and
   `anchor_color`); view_* relations are taken for the viewer facing the `facing` object.
The viewer facing object f stands on the room side opposite f's wall and looks straight at that wall:
`build_scene_graph(viewpoint=..., view_target="scene")` with the viewpoint on the line through the centre of
the objects' box, so "left" means left for someone looking at f's wall. The faced object's noun must occur
once in the scene. An expression is emitted only if `resolve` returns exactly its target, so every
description identifies its object; the kinds are "attribute" (colour or size: "the red chair", "the largest
cabinet"), "relational" ("the lamp on the nightstand", "the chair next to the bed") and "view_dependent"
("facing the window, the chair on the left"). Room-frame relations (left_of, in_front_of, ...) are not used:
a description names no viewer for them.

Unique / multiple (ScanRefer's split of the grounding metric): "unique" when the target's ScanRefer class
(`labels.SCANREFER_CLASSES`, "others" included) occurs once among the scene's referable objects.

Questions (ScanQA-style) have types "what" (what is on / above X), "colour", "count" (how many N [are
on / next to X]), "where" (answers: the relations that hold, e.g. "on the table"), "which" (which N is
<relation> X? -> its colour). Objects named in questions are described uniquely as above. Captions describe
every object by colour, noun and up to two relations (they need not be unique).

All choices are drawn from the generator passed in, so the text is a function of the seed.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType

import numpy as np

from scene3d.data.labels import SCANREFER_CLASS_TO_ID
from scene3d.data.scene_graph import SceneGraphConfig, build_scene_graph, relation_triplets

__all__ = [
    "EXTREMES", "LANDMARK_NOUNS", "PAIR_RELATIONS", "QUESTION_TYPES", "REFERRING_KINDS", "RELATION_PHRASES",
    "VIEW_RELATIONS", "ObjectFacts", "Query", "Question", "ReferringExpression", "SceneFacts", "SceneRelations",
    "attribute_queries", "caption", "noun_phrase", "plural", "questions", "referring_expressions",
    "relational_queries", "render_description", "resolve", "tokenize", "view_queries",
]

REFERRING_KINDS: tuple[str, ...] = ("attribute", "relational", "view_dependent")
QUESTION_TYPES: tuple[str, ...] = ("what", "colour", "count", "where", "which")
# Pairwise relations used in descriptions, with their English phrase ("supports" is rendered specially).
RELATION_PHRASES: Mapping[str, str] = MappingProxyType({
    "on": "on", "supports": "with {anchor} on it", "above": "above", "below": "under", "next_to": "next to",
    "near": "near", "view_left_of": "to the left of", "view_right_of": "to the right of",
    "view_in_front_of": "in front of", "view_behind": "behind",
})
PAIR_RELATIONS: tuple[str, ...] = ("on", "supports", "above", "below", "next_to", "near")
VIEW_RELATIONS: tuple[str, ...] = ("view_left_of", "view_right_of", "view_in_front_of", "view_behind")
# Objects a viewer may be said to face ("facing the window, ...").
LANDMARK_NOUNS: frozenset[str] = frozenset({
    "window", "door", "bed", "sofa", "tv", "whiteboard", "refrigerator", "bathtub", "toilet", "counter",
    "bookshelf", "desk", "mirror", "picture", "cabinet", "curtain", "shower curtain",
})
EXTREMES: tuple[str, ...] = ("largest", "smallest", "left", "right")
_EXTREME_RELATION = MappingProxyType({
    "largest": "bigger_than", "smallest": "smaller_than", "left": "view_left_of", "right": "view_right_of",
})
_PLURALS = MappingProxyType({"bookshelf": "bookshelves", "box": "boxes", "shelf": "shelves"})
VIEWER_DISTANCE = 3.0  # metres from the objects' centre to the viewer (only the direction matters)


def plural(noun: str) -> str:
    """English plural of a demo noun ("bookshelf" -> "bookshelves", "trash can" -> "trash cans")."""
    return _PLURALS.get(noun, noun + "s")


def tokenize(text: str) -> list[str]:
    """ScanRefer-style tokens: lower-case words and numbers, punctuation as separate tokens."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", text.lower())


@dataclass(frozen=True)
class ObjectFacts:
    """What the language generator knows about one referable object.

    Args:
        object_id: ScanNet objectId.
        noun: raw label, used as the noun ("trash can").
        eval_class: ScanRefer class (one of `labels.SCANREFER_CLASSES`).
        color: named colour.
        center, size: axis-aligned box (metres), as the reader computes it from the points.
        wall: index of the wall it hangs on / stands against (see `rooms.wall_frame`), or None.
    """

    object_id: int
    noun: str
    eval_class: str
    color: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    wall: int | None = None


@dataclass(frozen=True)
class SceneFacts:
    """The referable objects of a scene (graph node i = objects[i]) and the facts relations are built from.

    Args:
        scene_id: ScanNet scene id.
        objects: the referable objects.
        wall_normals: wall index -> inward unit normal (x, y).
        supported_by: (child node, parent node) support facts from the generator.

    Raises:
        ValueError: no objects, duplicate object ids, an unknown ScanRefer class, a support index out of range,
            or a wall without a normal.
    """

    scene_id: str
    objects: tuple[ObjectFacts, ...]
    wall_normals: Mapping[int, tuple[float, float]]
    supported_by: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.objects:
            raise ValueError(f"{self.scene_id}: a scene needs at least one referable object")
        ids = [obj.object_id for obj in self.objects]
        if len(set(ids)) != len(ids):
            repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
            raise ValueError(f"{self.scene_id}: duplicate object ids {repeated}")
        for obj in self.objects:
            if obj.eval_class not in SCANREFER_CLASS_TO_ID:
                raise ValueError(
                    f"{self.scene_id}: object {obj.object_id} has unknown ScanRefer class {obj.eval_class!r}"
                )
            if obj.wall is not None and obj.wall not in self.wall_normals:
                raise ValueError(f"{self.scene_id}: object {obj.object_id} is on wall {obj.wall}, which has no normal")
        for child, parent in self.supported_by:
            if not (0 <= child < len(self.objects) and 0 <= parent < len(self.objects)) or child == parent:
                raise ValueError(f"{self.scene_id}: bad support fact ({child}, {parent})")

    def count(self, noun: str, color: str | None = None) -> int:
        """Objects with this noun (and colour)."""
        return sum(obj.noun == noun and (color is None or obj.color == color) for obj in self.objects)

    def unique_multiple(self, node: int) -> str:
        """"unique" if node's ScanRefer class occurs once among the referable objects, else "multiple"."""
        target = self.objects[node].eval_class
        return "unique" if sum(obj.eval_class == target for obj in self.objects) == 1 else "multiple"


class SceneRelations:
    """Relation triplets (subject node, relation, object node) of a scene, from `build_scene_graph`.

    `base` has no viewer (view_* empty); `facing(f)` are the triplets for a viewer facing object f's wall.
    Graphs keep all pairs (`k=None`) so that "every other chair" really is every other chair.

    Args:
        facts: the scene.
        config: graph thresholds; `k` and `view_target` are overridden to None and "scene".
    """

    def __init__(self, facts: SceneFacts, config: SceneGraphConfig | None = None) -> None:
        base = config or SceneGraphConfig()
        self.config = SceneGraphConfig(**{**asdict(base), "k": None, "view_target": "scene"})
        self.facts = facts
        self.centers = np.array([obj.center for obj in facts.objects], dtype=np.float64)  # (N, 3)
        self.sizes = np.array([obj.size for obj in facts.objects], dtype=np.float64)  # (N, 3)
        self.class_ids = np.array([SCANREFER_CLASS_TO_ID[obj.eval_class] for obj in facts.objects], dtype=np.int64)
        self._gt = [(child, parent, "supported by") for child, parent in facts.supported_by]
        self.base = self._triplets(None)
        self._facing: dict[int, frozenset[tuple[int, str, int]]] = {}

    def _triplets(self, viewpoint: np.ndarray | None) -> frozenset[tuple[int, str, int]]:
        data = build_scene_graph(self.centers, self.sizes, self.class_ids, config=self.config,
                                 viewpoint=viewpoint, gt_relations=self._gt or None)
        return frozenset(relation_triplets(data))

    def viewpoint(self, faced: int) -> np.ndarray:
        """Viewer position (3,) looking straight at object `faced`'s wall across the objects' centre.

        Raises:
            ValueError: the object is not on a wall.
        """
        wall = self.facts.objects[faced].wall
        if wall is None:
            raise ValueError(f"object {self.facts.objects[faced].object_id} is on no wall; a viewer cannot face it")
        low = (self.centers - self.sizes / 2).min(axis=0)
        high = (self.centers + self.sizes / 2).max(axis=0)
        normal = np.array([*self.facts.wall_normals[wall], 0.0])
        return (low + high) / 2 + VIEWER_DISTANCE * normal  # forward = centre - viewer = -normal

    def facing(self, faced: int) -> frozenset[tuple[int, str, int]]:
        """Triplets (view_* included) for a viewer facing object `faced`'s wall."""
        if faced not in self._facing:
            self._facing[faced] = self._triplets(self.viewpoint(faced))
        return self._facing[faced]

    def of(self, subject: int, triplets: Iterable[tuple[int, str, int]] | None = None) -> list[tuple[str, int]]:
        """(relation, object) pairs of `subject`, in sorted order."""
        source = self.base if triplets is None else triplets
        return sorted((r, o) for s, r, o in source if s == subject)


@dataclass(frozen=True)
class Query:
    """A structured referring expression (meaning: module docstring).

    Args:
        noun: the target's noun.
        color: the target's colour, or None.
        extreme: "largest" / "smallest" / "left" / "right", or None.
        relation: a name from RELATION_PHRASES, or None.
        anchor_noun, anchor_color: the related object's noun (needed with `relation`) and colour (or None).
        facing: noun of the object the viewer faces (needed for view_* relations and left / right).

    Raises:
        ValueError: an unknown extreme or relation, a relation without anchor, or a view term without facing.
    """

    noun: str
    color: str | None = None
    extreme: str | None = None
    relation: str | None = None
    anchor_noun: str | None = None
    anchor_color: str | None = None
    facing: str | None = None

    def __post_init__(self) -> None:
        if self.extreme is not None and self.extreme not in EXTREMES:
            raise ValueError(f"extreme must be one of {EXTREMES} or None, got {self.extreme!r}")
        if self.relation is not None and self.relation not in RELATION_PHRASES:
            raise ValueError(f"relation must be one of {list(RELATION_PHRASES)} or None, got {self.relation!r}")
        if (self.relation is None) != (self.anchor_noun is None) or (self.anchor_color and not self.anchor_noun):
            raise ValueError("a relation needs an anchor_noun, and an anchor needs a relation")
        needs_view = self.extreme in ("left", "right") or (self.relation or "").startswith("view_")
        if needs_view and self.facing is None:
            raise ValueError("left / right and view_* relations need `facing` (the object the viewer faces)")

    def to_json(self) -> dict:
        """The non-empty fields, for the metadata files."""
        return {key: value for key, value in asdict(self).items() if value is not None}


def _faced_node(facts: SceneFacts, noun: str) -> int | None:
    """The single object with this noun that stands on a wall, or None."""
    nodes = [i for i, obj in enumerate(facts.objects) if obj.noun == noun]
    return nodes[0] if len(nodes) == 1 and facts.objects[nodes[0]].wall is not None else None


def resolve(query: Query, facts: SceneFacts, relations: SceneRelations) -> list[int]:
    """The nodes that satisfy `query` (module docstring), ascending; [] when its faced object is not unique."""
    triplets = relations.base
    if query.facing is not None:
        faced = _faced_node(facts, query.facing)
        if faced is None:
            return []
        triplets = relations.facing(faced)
    candidates = [i for i, obj in enumerate(facts.objects)
                  if obj.noun == query.noun and (query.color is None or obj.color == query.color)]
    if query.extreme is not None:
        name = _EXTREME_RELATION[query.extreme]
        candidates = [i for i in candidates if all((i, name, j) in triplets for j in candidates if j != i)]
    if query.relation is not None:
        anchors = {j for j, obj in enumerate(facts.objects) if obj.noun == query.anchor_noun
                   and (query.anchor_color is None or obj.color == query.anchor_color)}
        candidates = [i for i in candidates if any((i, query.relation, j) in triplets for j in anchors if j != i)]
    return candidates


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------
def _phrase(noun: str, color: str | None) -> str:
    return f"{color} {noun}" if color else noun


def _anchor_phrase(facts: SceneFacts, noun: str, color: str | None) -> str:
    """"the red table" when it is the only one, else "a red table"."""
    article = "the" if facts.count(noun, color) == 1 else "a"
    return f"{article} {_phrase(noun, color)}"


def _relation_phrase(facts: SceneFacts, relation: str, noun: str, color: str | None) -> str:
    anchor = _anchor_phrase(facts, noun, color)
    template = RELATION_PHRASES[relation]
    return template.format(anchor=anchor) if "{anchor}" in template else f"{template} {anchor}"


def _extreme_word(extreme: str, n_candidates: int) -> str:
    two = {"largest": "larger", "smallest": "smaller", "left": "left", "right": "right"}
    return two[extreme] if n_candidates == 2 else {"left": "leftmost", "right": "rightmost"}.get(extreme, extreme)


def noun_phrase(query: Query, facts: SceneFacts) -> str:
    """The query as a definite noun phrase without the facing clause ("the chair next to the bed")."""
    head = _phrase(query.noun, query.color)
    if query.extreme in ("largest", "smallest"):
        head = f"{_extreme_word(query.extreme, facts.count(query.noun, query.color))} {head}"
    if query.extreme in ("left", "right"):
        n = facts.count(query.noun, query.color)
        head = f"{head} on the {query.extreme}" if n == 2 else f"{_extreme_word(query.extreme, n)} {head}"
    text = f"the {head}"
    if query.relation is not None:
        text += " " + _relation_phrase(facts, query.relation, query.anchor_noun, query.anchor_color)
    return text


def render_description(query: Query, kind: str, facts: SceneFacts, rng: np.random.Generator) -> str:
    """ScanRefer-like text for a referring query: lower case, sentences ending in ".".

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in REFERRING_KINDS:
        raise ValueError(f"kind must be one of {REFERRING_KINDS}, got {kind!r}")
    phrase = noun_phrase(query, facts)
    if kind == "view_dependent":
        templates = [f"facing the {query.facing}, {phrase}.", f"when you face the {query.facing}, it is {phrase}.",
                     f"if you are facing the {query.facing}, this is {phrase}."]
    elif kind == "relational":
        templates = [f"{phrase}.", f"this is {phrase}.", f"it is {phrase}."]
    else:
        templates = [f"{phrase}.", f"this is {phrase}."]
        if query.color and query.extreme is None and facts.count(query.noun) > 1:
            templates.append(f"it is a {query.color} {query.noun}. it is the only {query.color} {query.noun} "
                             f"in the room.")
    return str(templates[int(rng.integers(len(templates)))])


# ---------------------------------------------------------------------------------------------------------
# Referring expressions
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferringExpression:
    """One description of one object.

    Args:
        target: node index of the described object.
        kind: one of REFERRING_KINDS.
        query: its meaning.
        text: the description.
        unique_multiple: "unique" / "multiple" (`SceneFacts.unique_multiple`).
    """

    target: int
    kind: str
    query: Query
    text: str
    unique_multiple: str


def _with_colors(base: Query, facts: SceneFacts, target: int, anchor: int | None) -> list[Query]:
    """`base`, then with the target's colour, the anchor's colour, and both: fewest words first."""
    color = facts.objects[target].color
    anchor_color = facts.objects[anchor].color if anchor is not None else None
    variants = [base, Query(**{**asdict(base), "color": color})]
    if anchor_color is not None:
        variants += [Query(**{**asdict(base), "anchor_color": anchor_color}),
                     Query(**{**asdict(base), "color": color, "anchor_color": anchor_color})]
    return variants


def _first_unique(queries: Sequence[Query], target: int, facts: SceneFacts, relations: SceneRelations) -> Query | None:
    return next((q for q in queries if resolve(q, facts, relations) == [target]), None)


def attribute_queries(target: int, facts: SceneFacts, relations: SceneRelations) -> list[Query]:
    """Colour and size descriptions of `target` that identify it."""
    obj = facts.objects[target]
    found = []
    colored = Query(obj.noun, color=obj.color)
    if resolve(colored, facts, relations) == [target]:
        found.append(colored)
    if facts.count(obj.noun) >= 2:
        for extreme in ("largest", "smallest"):
            query = _first_unique([Query(obj.noun, extreme=extreme), Query(obj.noun, color=obj.color, extreme=extreme)],
                                  target, facts, relations)
            if query is not None and (query.color is None or facts.count(obj.noun, obj.color) >= 2):
                found.append(query)
    return found


# A weaker relation that goes unsaid when the stronger one holds for the same pair.
_IMPLIED_BY = MappingProxyType({"near": "next_to", "above": "on", "below": "supports"})


def _informative_relations(node: int, facts: SceneFacts, relations: SceneRelations,
                           allowed: Sequence[str]) -> list[tuple[str, int]]:
    """(relation, anchor) pairs of `node` among `allowed`, to anchors of another noun, without the weaker of two
    relations to one anchor ("above" when "on" holds, "near" when "next_to" holds, "below" for "supports")."""
    pairs = relations.of(node)
    held = set(pairs)
    own = facts.objects[node].noun
    return [(relation, anchor) for relation, anchor in pairs
            if relation in allowed and facts.objects[anchor].noun != own
            and (_IMPLIED_BY.get(relation), anchor) not in held]


def relational_queries(target: int, facts: SceneFacts, relations: SceneRelations) -> list[Query]:
    """One identifying query per (relation, anchor) of `target` (fewest colour words), for PAIR_RELATIONS."""
    obj = facts.objects[target]
    found = []
    for relation, anchor in _informative_relations(target, facts, relations, PAIR_RELATIONS):
        base = Query(obj.noun, relation=relation, anchor_noun=facts.objects[anchor].noun)
        query = _first_unique(_with_colors(base, facts, target, anchor), target, facts, relations)
        if query is not None and query not in found:
            found.append(query)
    return found


def view_queries(target: int, facts: SceneFacts, relations: SceneRelations) -> list[Query]:
    """Identifying view-dependent queries of `target`: left / right-most of its kind, or a view relation to a
    nearby object, for a viewer facing each landmark (a wall object whose noun is unique)."""
    obj = facts.objects[target]
    near = {anchor for relation, anchor in relations.of(target) if relation == "near"}
    found = []
    for faced, landmark in enumerate(facts.objects):
        if faced == target or landmark.noun not in LANDMARK_NOUNS or _faced_node(facts, landmark.noun) != faced:
            continue
        if facts.count(obj.noun) >= 2:
            for extreme in ("left", "right"):
                query = _first_unique([Query(obj.noun, extreme=extreme, facing=landmark.noun),
                                       Query(obj.noun, color=obj.color, extreme=extreme, facing=landmark.noun)],
                                      target, facts, relations)
                if query is not None and (query.color is None or facts.count(obj.noun, obj.color) >= 2):
                    found.append(query)
        for relation, anchor in relations.of(target, relations.facing(faced)):
            if relation not in VIEW_RELATIONS or anchor not in near or facts.objects[anchor].noun == obj.noun:
                continue
            base = Query(obj.noun, relation=relation, anchor_noun=facts.objects[anchor].noun, facing=landmark.noun)
            query = _first_unique(_with_colors(base, facts, target, anchor), target, facts, relations)
            if query is not None and query not in found:
                found.append(query)
    return found


def referring_expressions(facts: SceneFacts, relations: SceneRelations, rng: np.random.Generator, *,
                          per_kind: int = 1) -> list[ReferringExpression]:
    """Up to `per_kind` descriptions of each kind for every referable object, each verified to identify its
    target (`resolve(query) == [target]`), objects in node order, kinds in REFERRING_KINDS order.

    Raises:
        ValueError: per_kind < 1.
    """
    if per_kind < 1:
        raise ValueError(f"per_kind must be >= 1, got {per_kind}")
    makers = {"attribute": attribute_queries, "relational": relational_queries, "view_dependent": view_queries}
    expressions = []
    for target in range(len(facts.objects)):
        for kind in REFERRING_KINDS:
            queries = makers[kind](target, facts, relations)
            chosen = rng.permutation(len(queries))[:per_kind] if queries else []
            for index in sorted(int(i) for i in chosen):
                query = queries[index]
                if resolve(query, facts, relations) != [target]:  # makers only return identifying queries
                    raise AssertionError(f"{facts.scene_id}: query {query} does not identify node {target}")
                expressions.append(ReferringExpression(
                    target, kind, query, render_description(query, kind, facts, rng), facts.unique_multiple(target),
                ))
    return expressions


# ---------------------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    """A ScanQA-style question about a scene.

    Args:
        question_type: one of QUESTION_TYPES.
        question: the text.
        answers: the accepted answers (any one is correct).
        targets: node indices of the objects the answer is about (ScanQA's object_ids).
        about: node indices of the anchors the question names ("the table" of "what is on the table?").
    """

    question_type: str
    question: str
    answers: tuple[str, ...]
    targets: tuple[int, ...]
    about: tuple[int, ...] = field(default_factory=tuple)


def _plain_description(node: int, facts: SceneFacts, relations: SceneRelations,
                       *, allow_color: bool = True, allow_relations: bool = False,
                       exclude: frozenset[int] = frozenset()) -> str | None:
    """Shortest identifying noun phrase of `node` ("the bed", "the red chair", "the chair next to the bed"),
    optionally without its colour or with relations (never relations to `exclude`), or None."""
    obj = facts.objects[node]
    options = [Query(obj.noun)]
    if allow_color:
        options.append(Query(obj.noun, color=obj.color))
    query = _first_unique(options, node, facts, relations)
    if query is None and allow_relations:
        for relation, anchor in relations.of(node):
            if relation not in PAIR_RELATIONS or anchor in exclude or facts.objects[anchor].noun == obj.noun:
                continue
            base = Query(obj.noun, relation=relation, anchor_noun=facts.objects[anchor].noun)
            with_anchor_color = Query(**{**asdict(base), "anchor_color": facts.objects[anchor].color})
            query = _first_unique([base, with_anchor_color], node, facts, relations)
            if query is not None:
                break
    return None if query is None else noun_phrase(query, facts)


def _where_answers(node: int, facts: SceneFacts, relations: SceneRelations) -> list[str]:
    """Relations of `node` as "where" answers: on, then above, then next to (nearest anchor first), at most 3."""
    pairs = _informative_relations(node, facts, relations, ("on", "above", "next_to"))
    answers = []
    for relation in ("on", "above", "next_to"):
        anchors = sorted((a for r, a in pairs if r == relation), key=lambda a: (_box_gap(relations, node, a), a))
        for anchor in anchors:
            answer = f"{RELATION_PHRASES[relation]} the {facts.objects[anchor].noun}"
            if answer not in answers:
                answers.append(answer)
    return answers[:3]


def _box_gap(relations: SceneRelations, i: int, j: int) -> float:
    """Distance between the boxes of nodes i and j (0 when they touch)."""
    offset = np.abs(relations.centers[i] - relations.centers[j]) - (relations.sizes[i] + relations.sizes[j]) / 2
    return float(np.linalg.norm(np.maximum(offset, 0.0)))


def questions(facts: SceneFacts, relations: SceneRelations, rng: np.random.Generator, *,
              per_type: int = 3) -> list[Question]:
    """Up to `per_type` questions of each type in QUESTION_TYPES, chosen at random among all that can be asked.

    Raises:
        ValueError: per_type < 1.
    """
    if per_type < 1:
        raise ValueError(f"per_type must be >= 1, got {per_type}")
    pools: dict[str, list[Question]] = {name: [] for name in QUESTION_TYPES}
    objects = facts.objects
    nodes = range(len(objects))

    # what is on / above X?
    for anchor in nodes:
        for relation in ("on", "above"):
            items = sorted(s for s, r, o in relations.base if r == relation and o == anchor
                           and not (relation == "above" and (s, "on", anchor) in relations.base))
            if not items:
                continue
            about = _plain_description(anchor, facts, relations, allow_relations=True, exclude=frozenset(items))
            if about is None:
                continue
            nouns = sorted({objects[i].noun for i in items})
            answers = ([" and ".join(nouns)] if len(nouns) > 1 else []) + nouns  # the full answer first
            pools["what"].append(Question("what", f"what is {relation} {about}?", tuple(answers), tuple(items),
                                          (anchor,)))

    # what colour is X?
    for node in nodes:
        about = _plain_description(node, facts, relations, allow_color=False, allow_relations=True)
        if about is not None:
            spelling = "colour" if rng.random() < 0.5 else "color"
            pools["colour"].append(Question("colour", f"what {spelling} is {about}?", (objects[node].color,), (node,)))

    # how many N are there / are on / next to X?
    counts = Counter(obj.noun for obj in objects)
    for noun in sorted(counts):
        members = tuple(i for i in nodes if objects[i].noun == noun)
        pools["count"].append(Question("count", f"how many {plural(noun)} are there in the room?",
                                       (str(len(members)),), members))
    for anchor in nodes:
        about = _plain_description(anchor, facts, relations)
        if about is None:
            continue
        for relation in ("on", "next_to"):
            related = [s for s, r, o in relations.base if r == relation and o == anchor]
            for noun in sorted({objects[s].noun for s in related} - {objects[anchor].noun}):
                members = tuple(sorted(s for s in related if objects[s].noun == noun))
                pools["count"].append(Question(
                    "count", f"how many {plural(noun)} are {RELATION_PHRASES[relation]} {about}?",
                    (str(len(members)),), members, (anchor,)))

    # where is X?
    for node in nodes:
        about = _plain_description(node, facts, relations)
        answers = _where_answers(node, facts, relations)
        if about is not None and answers:
            pools["where"].append(Question("where", f"where is {about}?", tuple(answers), (node,)))

    # which N is <relation> X?  -> its colour (when the colour tells it apart from the other Ns)
    for node in nodes:
        obj = objects[node]
        if counts[obj.noun] < 2 or facts.count(obj.noun, obj.color) != 1:
            continue
        plain = [q for q in relational_queries(node, facts, relations) if q.color is None and q.anchor_color is None]
        if not plain:
            continue
        query = plain[int(rng.integers(len(plain)))]
        # `query` identifies the node with any anchor of its noun; naming one particular anchor keeps that true.
        anchor = next(a for r, a in relations.of(node) if r == query.relation and objects[a].noun == query.anchor_noun)
        anchor_text = _plain_description(anchor, facts, relations) or _anchor_phrase(facts, query.anchor_noun, None)
        if query.relation == "supports":
            text = f"which {obj.noun} has {_anchor_phrase(facts, query.anchor_noun, None)} on it?"
        else:
            text = f"which {obj.noun} is {RELATION_PHRASES[query.relation]} {anchor_text}?"
        pools["which"].append(Question("which", text, (obj.color, f"{obj.color} {obj.noun}", f"the {obj.color} one"),
                                       (node,), (anchor,)))

    chosen = []
    for name in QUESTION_TYPES:
        pool = pools[name]
        for index in sorted(int(i) for i in rng.permutation(len(pool))[:per_type]):
            chosen.append(pool[index])
    return chosen


# ---------------------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------------------
# Caption clauses: "it is next to a window and has a pillow on it."
_CAPTION_CLAUSES = MappingProxyType({
    "on": "is on {anchor}", "supports": "has {anchor} on it", "above": "is above {anchor}",
    "below": "is under {anchor}", "next_to": "is next to {anchor}",
})


def caption(node: int, facts: SceneFacts, relations: SceneRelations, rng: np.random.Generator) -> str:
    """A Scan2Cap-style caption: colour, noun and up to two relations to objects of other nouns ("this is a
    red chair. it is next to the bed and is near the window."), plus its size rank when it is the largest /
    smallest of its noun."""
    obj = facts.objects[node]
    article = "an" if obj.color[0] in "aeiou" else "a"
    text = f"this is {article} {obj.color} {obj.noun}."
    clauses = []
    for relation, anchor in _informative_relations(node, facts, relations, tuple(_CAPTION_CLAUSES)):
        clause = _CAPTION_CLAUSES[relation].format(anchor=_anchor_phrase(facts, facts.objects[anchor].noun, None))
        if clause not in clauses:
            clauses.append(clause)
    if clauses:
        picked = [clauses[int(i)] for i in sorted(rng.permutation(len(clauses))[:2])]
        text += " it " + " and ".join(picked) + "."
    for extreme in ("largest", "smallest"):
        if facts.count(obj.noun) >= 2 and resolve(Query(obj.noun, extreme=extreme), facts, relations) == [node]:
            text += f" it is the {_extreme_word(extreme, facts.count(obj.noun))} of the {plural(obj.noun)}."
            break
    return text
