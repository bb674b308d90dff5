"""scene3d data: ScanNet-format scene reader and writer, label maps, language annotation readers, scene graphs."""
