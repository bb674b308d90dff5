"""Evaluation of pre-trained CT-report models: retrieval, zero-shot finding classification, pointing, figures."""
