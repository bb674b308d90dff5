"""Evaluation metrics shared by every domain."""
from common.metrics.classification import multilabel_auroc
from common.metrics.retrieval import ranks_of_ground_truth, retrieval_recall_at_k

__all__ = ["multilabel_auroc", "ranks_of_ground_truth", "retrieval_recall_at_k"]
