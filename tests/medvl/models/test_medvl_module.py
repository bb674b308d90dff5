"""The pre-training module: every objective gives a finite loss whose gradients reach its own parameters."""
from __future__ import annotations

import pytest
import torch

from common.text.tokenizer import tokenizer_to_json, train_wordpiece_tokenizer
from medvl.evaluation.figures import plot_pointing_examples
from medvl.evaluation.pointing import pointing_summary
from medvl.models.medvl_module import OBJECTIVES, MedVLPretrainModule

SENTENCES = [
    ["A 12 mm hypodense lesion is seen in the liver.", "No pleural effusion was detected."],
    ["The spleen is normal.", "A 9 mm cyst in the left kidney.", "Lungs are clear."],
    ["No focal liver lesion.", "Small right pleural effusion."],
]
LABELS = ["liver lesion", "pleural effusion"]


@pytest.fixture(scope="module")
def tokenizer_json():
    corpus = [s for report in SENTENCES for s in report] * 3
    return tokenizer_to_json(train_wordpiece_tokenizer(corpus, vocab_size=300, min_frequency=1))


def _module(tokenizer_json, ssl=None, zeroshot_templates=None, **weights):
    torch.manual_seed(0)
    loss_weights = {name: 0.0 for name in OBJECTIVES}
    loss_weights.update(weights)
    return MedVLPretrainModule(
        tokenizer_json=tokenizer_json, label_names=LABELS,
        preprocess={"spatial_size": [32, 32, 32], "spacing": [5, 5, 5]},
        volume_encoder={"feature_size": 12}, embed_dim=16,
        text_encoder={"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_cross_attention_layers": 1,
                      "dropout": 0.0},
        loss_weights=loss_weights, ssl={"block_size": 8, "mask_ratio": 0.3, **(ssl or {})},
        zeroshot_templates=zeroshot_templates,
    )


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"image": torch.rand(3, 1, 32, 32, 32, generator=g), "sentences": SENTENCES,
            "labels": torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]), "findings": [[], [], []], "index": torch.arange(3)}


# objective -> sub-modules that must receive gradients from it alone
OWN_PARAMETERS = {
    "report_contrastive": ["report_proj", "clip", "volume_encoder.pooled_proj", "text_encoder.embeddings"],
    "sentence_alignment": ["sentence_proj", "volume_encoder.coarse_proj", "text_encoder.embeddings"],
    "word_alignment": ["word_proj", "volume_encoder.fine_proj", "text_encoder.embeddings"],
    "matching": ["matching.head", "volume_encoder.tokens_proj", "text_encoder.embeddings"],
    "multimodal_mlm": ["text_encoder.mlm_transform", "volume_encoder.tokens_proj"],
    "text_mlm": ["text_encoder.mlm_transform", "text_encoder.embeddings"],
    "rotation": ["rotation.head", "volume_encoder.pooled_proj", "volume_encoder.backbone"],
    "view_contrastive": ["view_contrastive.projection", "volume_encoder.backbone"],
    "reconstruction": ["reconstruction.decoder", "volume_encoder.fine_proj", "volume_encoder.backbone"],
}


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_alone_gives_a_finite_loss_with_gradients_to_its_parameters(tokenizer_json, objective):
    module = _module(tokenizer_json, **{objective: 1.0})
    out = module.compute_losses(_batch(), "train")
    losses = {k: v for k, v in out.items() if k.endswith("_loss")}
    assert list(losses) == [f"{objective}_loss"]
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for prefix in OWN_PARAMETERS[objective]:
        params = [(n, p) for n, p in module.named_parameters() if n.startswith(prefix) and p.requires_grad]
        assert params, prefix
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in params), f"no gradient in {prefix}"


def test_all_objectives_every_trainable_parameter_gets_a_finite_gradient(tokenizer_json):
    module = _module(tokenizer_json, **{name: 1.0 for name in OBJECTIVES})
    out = module.compute_losses(_batch(), "train")
    assert {k for k in out if k.endswith("_loss")} == {f"{name}_loss" for name in OBJECTIVES}
    sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:10]
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_disabled_objectives_build_no_heads_and_freeze_unused_outputs(tokenizer_json):
    module = _module(tokenizer_json, report_contrastive=1.0)
    assert not hasattr(module, "matching") and not hasattr(module, "sentence_alignment")
    assert module.text_encoder.num_cross_attention_layers == 0
    assert not any(p.requires_grad for p in module.volume_encoder.fine_proj.parameters())
    out = module.compute_losses(_batch(), "train")
    out["report_contrastive_loss"].backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:10]  # DDP without find_unused_parameters needs this


def test_bad_configuration_errors(tokenizer_json):
    with pytest.raises(ValueError, match="unknown objectives"):
        _module(tokenizer_json, contrastive=1.0)
    with pytest.raises(ValueError, match="at least one"):
        _module(tokenizer_json)
    with pytest.raises(ValueError, match="spatial_size"):
        MedVLPretrainModule(tokenizer_json=tokenizer_json, label_names=LABELS,
                            preprocess={"spatial_size": [32, 32, 32]}, volume_encoder={"image_size": [64, 64, 64]})


def test_global_embeddings_and_evaluation_metrics(tokenizer_json):
    module = _module(tokenizer_json, report_contrastive=1.0).eval()
    with torch.no_grad():
        emb = module(_batch()["image"], SENTENCES)
        assert emb["volume"].shape == (3, 16) and emb["report"].shape == (3, 16)
        module.on_validation_epoch_start()
        module.compute_losses(_batch(), "val")
        metrics = module.evaluation_metrics()
    for key in ("retrieval/v2t_R@1", "retrieval/t2v_R@5", "zeroshot/auroc_mean",
                "zeroshot/auroc/liver lesion", "zeroshot/auroc/pleural effusion"):
        assert key in metrics, key
    assert 0.0 <= metrics["retrieval/v2t_R@1"] <= 1.0
    assert metrics["retrieval/v2t_R@5"] == 1.0  # only 3 candidates


def test_checkpoint_hparams_are_plain_and_rebuild_the_model(tokenizer_json, tmp_path):
    module = _module(tokenizer_json, report_contrastive=1.0, sentence_alignment=1.0)
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": "2.6.0"}, path)
    rebuilt = MedVLPretrainModule.load_from_checkpoint(path, weights_only=True)
    for (name, a), (_, b) in zip(module.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name
    assert rebuilt.tokenizer("lesion")["input_ids"] == module.tokenizer("lesion")["input_ids"]


def test_saved_hparams_keep_the_backbone_name(tokenizer_json):
    module = _module(tokenizer_json, report_contrastive=1.0)
    assert module.hparams["volume_encoder"]["backbone"] == "swin"


def _module_with_templates(tokenizer_json, templates):
    return _module(tokenizer_json, zeroshot_templates=templates, report_contrastive=1.0).eval()


def test_zero_shot_prompts_are_encoded_after_the_context_sentences(tokenizer_json):
    context = ["The spleen is normal.", "Lungs are clear."]
    module = _module_with_templates(tokenizer_json, {"positive": ["There is {finding}."],
                                                     "negative": ["No {finding}."], "context": context})
    assert module.hparams["zeroshot_templates"]["context"] == context
    with torch.no_grad():
        pos, neg = module._prompt_embeddings()  # K findings x (P, E)
        expected = module.encode_report([[*context, "There is pleural effusion."]])[0]
        bare = module.encode_report([["There is pleural effusion."]])[0]
    assert [p.shape for p in pos] == [n.shape for n in neg] == [(1, 16), (1, 16)]
    torch.testing.assert_close(pos[1][0], expected)
    assert not torch.allclose(pos[1][0], bare, atol=1e-4)


def test_zero_shot_phrases_replace_the_label_name_in_the_prompts_and_keep_the_other_settings(tokenizer_json):
    context = ["The spleen is normal."]
    module = _module_with_templates(tokenizer_json, {"positive": ["There is {finding}."],
                                                     "negative": ["No {finding}."], "context": context})
    module.set_zeroshot_templates({"phrases": {"liver lesion": ["hypodense lesion", "liver cyst"]}})
    assert module.hparams["zeroshot_templates"]["context"] == context  # kept from the checkpoint's settings
    with torch.no_grad():
        pos, neg = module._prompt_embeddings()  # K findings x (P_k, E): 2 phrases x 1 template for the liver
        expected = module.encode_report([[*context, "There is hypodense lesion."], [*context, "No liver cyst."]])
        effusion = module.encode_report([[*context, "There is pleural effusion."]])[0]
    assert [p.shape for p in pos] == [n.shape for n in neg] == [(2, 16), (1, 16)]
    torch.testing.assert_close(pos[0][0], expected[0])
    torch.testing.assert_close(neg[0][1], expected[1])
    torch.testing.assert_close(pos[1][0], effusion)  # a label without a phrase keeps its name
    with pytest.raises(ValueError, match="'kidney cyst', which is not a finding label"):
        module.set_zeroshot_templates({"phrases": {"kidney cyst": "renal cyst"}})
    with pytest.raises(ValueError, match="non-empty phrase"):
        module.set_zeroshot_templates({"phrases": {"liver lesion": " "}})
    with pytest.raises(ValueError, match="equally many"):
        module.set_zeroshot_templates({"positive": ["There is {finding}.", "{Finding} is seen."]})


def test_unknown_zero_shot_template_key_is_rejected(tokenizer_json):
    with pytest.raises(ValueError, match=r"unknown zeroshot_templates key\(s\) \['contexts'\]"):
        _module_with_templates(tokenizer_json, {"contexts": ["x."]})


def _reconstruction_module(tokenizer_json, stride):
    return _module(tokenizer_json, ssl={"reconstruction_stride": stride}, reconstruction=1.0)


def test_reconstruction_stride_decodes_a_pooled_target_with_fewer_upsampling_stages(tokenizer_json):
    full, pooled = _reconstruction_module(tokenizer_json, 1), _reconstruction_module(tokenizer_json, 2)
    fine_stride = full.volume_encoder.fine_stride
    assert full.reconstruction.upsample_factor == fine_stride and pooled.reconstruction.upsample_factor == fine_stride // 2
    loss = pooled.compute_losses(_batch(), "train")["reconstruction_loss"]
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in pooled.reconstruction.parameters())
    with pytest.raises(ValueError, match="reconstruction_stride"):
        _reconstruction_module(tokenizer_json, 3)


def test_pointing_source_auto_takes_the_finest_trained_alignment_and_checks_named_ones(tokenizer_json):
    assert _module(tokenizer_json, word_alignment=1.0, sentence_alignment=1.0).pointing_method == "word_alignment"
    assert _module(tokenizer_json, sentence_alignment=1.0).pointing_method == "sentence_alignment"
    assert _module(tokenizer_json, report_contrastive=1.0).pointing_method == "global_cam"
    with pytest.raises(ValueError, match="trained without"):
        MedVLPretrainModule(tokenizer_json=tokenizer_json, label_names=LABELS, preprocess={"spatial_size": [32] * 3},
                            volume_encoder={"feature_size": 12}, loss_weights={"word_alignment": 0.0},
                            pointing_source="word_alignment")
    with pytest.raises(ValueError, match="not one of"):
        MedVLPretrainModule(tokenizer_json=tokenizer_json, label_names=LABELS, preprocess={"spatial_size": [32] * 3},
                            volume_encoder={"feature_size": 12}, pointing_source="words")


def test_word_alignment_pointing_averages_the_attention_of_each_sentences_words(tokenizer_json):
    module = _module(tokenizer_json, word_alignment=1.0, sentence_alignment=1.0).eval()
    batch = _batch()
    with torch.no_grad():
        text_inputs = module.encode_reports(batch["sentences"])
        vision = module.encode_volume(batch["image"])
        text = module.text_encoder.encode_text(text_inputs)
        by_words, grid = module._sentence_attention(vision, text, text_inputs, batch["sentences"])
        words = module.word_alignment.attention(module.word_proj(text["words"]), text["word_mask"], vision["fine"])
        module.pointing_method = "sentence_alignment"
        by_sentence, coarse_grid = module._sentence_attention(vision, text, text_inputs, batch["sentences"])
    assert grid == tuple(vision["fine_grid"]) and coarse_grid == tuple(vision["coarse_grid"])
    assert by_words.shape == (3, 3, vision["fine"].shape[1]) and by_sentence.shape[-1] == vision["coarse"].shape[1]
    word_sentence = text_inputs["word_sentence"]
    for i, report in enumerate(batch["sentences"]):
        for s in range(len(report)):
            members = word_sentence[i] == s
            assert int(members.sum()) >= 3  # every sentence has several words
            assert torch.allclose(by_words[i, s], words[i, members].mean(dim=0), atol=1e-6)
            assert torch.isclose(by_words[i, s].sum(), torch.tensor(1.0), atol=1e-5)  # still a distribution
        assert not by_words[i, len(report):].any()  # padded sentences point nowhere
    assert not torch.allclose(by_words[1, 0], by_words[1, 1], atol=1e-4)  # each sentence has its own map


def test_pointing_metrics_score_the_finding_sentence_against_a_control_sentence_per_organ(tokenizer_json, tmp_path):
    module = _module(tokenizer_json, report_contrastive=1.0)
    module.hparams["organ_labels"] = {"liver": 1, "lung_upper_lobe_left": 2, "lung_lower_lobe_left": 3}
    masks = torch.zeros(2, 1, 32, 32, 32, dtype=torch.long)
    masks[:, 0, :16, :16, :16] = 1  # liver: octant 0 of the 2^3 grid
    masks[:, 0, 16:, 16:, :16] = 2  # upper lobe: octant 6; lower lobe: octant 7 (lobes count as one lung)
    masks[:, 0, 16:, 16:, 16:] = 3
    sentences = [["Technique.", "A lesion in the liver.", "A nodule in the left upper lobe."],
                 ["Technique.", "A nodule in the left lower lobe."]]
    findings = [[{"organ": "liver", "sentence": "A lesion in the liver."},
                 {"organ": "lung_upper_lobe_left", "sentence": "A nodule in the left upper lobe."}],
                [{"organ": "lung_lower_lobe_left", "sentence": "A nodule in the left lower lobe."}]]
    attention = torch.zeros(2, 3, 8)
    attention[:, 0, 3] = 1.0  # the technique sentences point at an empty octant
    attention[0, 1, 0] = 1.0  # liver sentence -> liver octant: hit
    attention[0, 2, 0] = 1.0  # upper lobe sentence -> liver octant: miss
    attention[1, 1, 7] = 1.0  # lower lobe sentence -> lower lobe octant: a hit for "lung"
    module._sentence_attention = lambda *args: (attention, (2, 2, 2))
    module.on_validation_epoch_start()
    batch = {"image": torch.rand(2, 1, 32, 32, 32), "organ_mask": masks, "sentences": sentences, "findings": findings,
             "index": torch.arange(2)}
    module._collect_pointing(batch, {}, {}, {})
    assert not module._eval_store["pointing_examples"]  # validation epochs keep no figure slices
    module.on_validation_epoch_start()
    module._collect_pointing(batch, {}, {}, {}, keep_examples=True)
    store = module._eval_store
    summary = pointing_summary(store["pointing_hits"], store["pointing_families"], store["pointing_chance"],
                               store["pointing_control_hits"])
    assert summary == pytest.approx({"pointing_acc": 2 / 3, "pointing_acc/liver": 1.0, "pointing_acc/lung": 0.5,
                                     "pointing_acc_control_sentence": 0.0, "pointing_acc_control_sentence/liver": 0.0,
                                     "pointing_acc_control_sentence/lung": 0.0, "pointing_n": 3.0,
                                     "pointing_chance": (1 / 8 + 2 / 8 + 2 / 8) / 3, "pointing_chance/liver": 1 / 8,
                                     "pointing_chance/lung": 2 / 8})
    liver = store["pointing_examples"][0]  # the figure's example: the axial slice through the peak, in the liver
    assert liver["hit"] and liver["organ_name"] == "liver" and liver["slice"] < 16 and liver["organ"].shape == (32, 32)
    assert liver["organ"][liver["peak"]] == 1 and liver["image"].shape == liver["attention"].shape == (32, 32)
    assert [e["hit"] for e in store["pointing_examples"]] == [True, False, True]
    figure = plot_pointing_examples(store["pointing_examples"], tmp_path / "pointing.png")
    assert figure.read_bytes()[:4] == b"\x89PNG"
    attention[:, 0, 3], attention[:, 0, 0] = 0.0, 1.0  # technique sentences now point at the liver octant
    module.on_validation_epoch_start()
    module._collect_pointing(batch, {}, {}, {})
    assert module._eval_store["pointing_control_hits"] == [1.0, 0.0, 0.0]  # a hit for the liver finding only


def test_merged_evaluation_stores_equal_the_single_process_store():
    """Two ranks' records (DistributedSampler order, study 0 repeated on rank 1 as padding) merge into exactly the
    records of one process over the split: each study once, in dataset order, its pointing entries with it."""
    import torch

    from medvl.models.medvl_module import merge_evaluation_stores

    emb = torch.arange(3 * 2, dtype=torch.float32).reshape(3, 2)  # study i -> row i

    def store(rows, pointing):
        return {"index": list(rows), "volume": [emb[list(rows)]], "report": [-emb[list(rows)]],
                "labels": [torch.tensor([[float(r)] for r in rows])], "reports": [f"r{r}" for r in rows],
                "pointing_row": [r for r, _ in pointing], "pointing_hits": [h for _, h in pointing],
                "pointing_families": ["liver" for _ in pointing], "pointing_chance": [0.1 for _ in pointing],
                "pointing_control_hits": [0.0 for _ in pointing], "pointing_grid_tokens": [64]}

    single = store([0, 1, 2], [(0, 1.0), (0, 0.0), (2, 1.0)])
    rank0 = store([0, 2], [(0, 1.0), (0, 0.0), (2, 1.0)])
    rank1 = store([1, 0], [(0, 1.0), (0, 0.0)])  # the padding copy of study 0 and its findings
    merged = merge_evaluation_stores([rank0, rank1])
    expected = merge_evaluation_stores([single])
    assert merged["index"] == expected["index"] == [0, 1, 2]
    assert merged["reports"] == ["r0", "r1", "r2"]
    for key in ("volume", "report", "labels"):
        assert torch.equal(merged[key][0], expected[key][0]) and torch.equal(expected[key][0], torch.cat(single[key]))
    assert merged["pointing_hits"] == [1.0, 0.0, 1.0] and merged["pointing_row"] == [0, 0, 2]
    assert merged["pointing_grid_tokens"] == [64]
