"""Segmentation fine-tuning of pre-trained medvl encoders (MONAI SwinUNETR / UNETR), prediction and MONAI bundles.

    network.py       network_spec / build_segmentation_network: the MONAI network an export fits, strict loading
    labels.py        classes as unions of source label ids; RemapLabelsd
    manifest.py      labelled studies from a manifest (volume + label columns) or the demo set's organ masks
    data.py          SegmentationDataModule: studies -> preprocessed training crops / whole evaluation volumes
    module.py        SegmentationModule: DiceCE training, sliding-window validation, Dice per class
    inference.py     SlidingWindowSegmenter: whole-volume prediction back on the input's grid (NIfTI)
    bundle.py        write_bundle: a MONAI bundle folder runnable with `python -m monai.bundle run`
    compare_init.py  pre-trained vs random init with few labels (`python -m medvl.segmentation.compare_init`)
"""
