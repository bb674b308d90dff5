"""scene3d models: components (object, graph, text encoders, heads) and the pre-training LightningModule."""
