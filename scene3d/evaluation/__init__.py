"""Benchmark metrics of the scene3d fine-tuning tasks, each with the published definition in its docstring.

- `box_iou`: axis-aligned 3D IoU and the 8-corner box format of the ScanRefer benchmark;
- `grounding_accuracy`: ScanRefer Acc@0.25 / Acc@0.5, overall / unique / multiple;
- `nr3d_accuracy`: ReferIt3D accuracy overall / easy / hard / view-dependent / view-independent;
- `multi3drefer_f1`: Multi3DRefer F1@0.25 / F1@0.5 with Hungarian matching;
- `qa_exact_match`: ScanQA EM@1 / EM@10 (exact string) and the separate normalised "refined" EM;
- `dense_caption_scores`: Scan2Cap's m@kIoU (CIDEr / BLEU-4 / METEOR / ROUGE-L, IoU >= k);
- BLEU-1..4, METEOR, ROUGE-L, CIDEr through pycocoevalcap are domain-free: `common.metrics.caption_scores`.
"""
