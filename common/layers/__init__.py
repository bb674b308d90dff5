"""Fusion and projection layers shared by every domain."""
from common.layers.cross_attention import CrossAttentionBlock, CrossAttentionFusion
from common.layers.projection import ProjectionHead

__all__ = ["CrossAttentionBlock", "CrossAttentionFusion", "ProjectionHead"]
