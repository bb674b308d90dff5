"""Building blocks of the scene3d models: plain nn.Modules that know nothing about Hydra or Lightning."""
from scene3d.models.components.graph_encoder import SceneGraphEncoder
from scene3d.models.components.heads import ObjectClassHead, RelationPairHead
from scene3d.models.components.object_encoder import PointNetObjectEncoder
from scene3d.models.components.objectwise_encoder import ObjectwiseEncoder, matched_hidden_dim
from scene3d.models.components.text_encoder import SceneTextEncoder

__all__ = [
    "ObjectClassHead", "ObjectwiseEncoder", "PointNetObjectEncoder", "RelationPairHead", "SceneGraphEncoder",
    "SceneTextEncoder", "matched_hidden_dim",
]
