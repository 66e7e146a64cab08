"""The SegFormer factory (variants as data, local pretrained weights) and the loss / Dice pieces."""

import numpy as np
import pytest
import torch

from core.config import ModelConfig, StudioConfig, apply_overrides
from core.errors import ConfigError
from core.model.factory import build_segformer
from core.model.variants import VARIANT_TABLE
from core.model.lightning_module import SegmentationModule, _CaseDayScores, class_map, predict_masks

# Parameter counts of the MiT encoders + all-MLP decoders with 3 output channels (the SegFormer
# paper lists 3.8 M for B0 and 27.5 M for B2 with 150 classes; the head's width differs).
EXPECTED_PARAMS = {"b0": 3_714_915, "b2": 27_348_931}


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_variants_build_with_the_table_values(variant):
    model = build_segformer(ModelConfig(variant=variant))
    assert model.config.hidden_sizes == VARIANT_TABLE[variant]["hidden_sizes"]
    assert model.config.depths == VARIANT_TABLE[variant]["depths"]
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[variant]


def test_random_initialisation_warns(caplog):
    with caplog.at_level("WARNING", logger="core.model.factory"):
        build_segformer(ModelConfig())
    assert "random initialisation" in caplog.text


def test_local_pretrained_folder_loads_encoder_and_resets_head(tmp_path):
    from transformers import SegformerForSemanticSegmentation

    source = build_segformer(ModelConfig(num_classes=150))  # like an ADE20k checkpoint
    source.save_pretrained(tmp_path / "mit b0 ü")
    model = build_segformer(ModelConfig(pretrained=str(tmp_path / "mit b0 ü")))
    assert model.config.num_labels == 3
    assert model.config.id2label[2] == "stomach"
    src, dst = source.state_dict(), model.state_dict()
    encoder_keys = [k for k in dst if k.startswith("segformer.")]
    assert encoder_keys and all(torch.equal(src[k], dst[k]) for k in encoder_keys)
    assert dst["decode_head.classifier.weight"].shape[0] == 3
    assert isinstance(model, SegformerForSemanticSegmentation)


def test_pretrained_folder_of_another_variant_is_explained(tmp_path):
    build_segformer(ModelConfig(variant="b1")).save_pretrained(tmp_path / "mit-b1")
    with pytest.raises(ConfigError, match="holds MiT-B1 weights but model.variant is b0; set "
                                          "model.variant to b1"):
        build_segformer(ModelConfig(pretrained=str(tmp_path / "mit-b1")))


def test_pretrained_folder_without_config_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        build_segformer(ModelConfig(pretrained=str(tmp_path)))


def test_multiclass_overlap_goes_to_the_later_organ():
    masks = torch.zeros(1, 3, 2, 2)
    masks[0, 0, 0, 0] = masks[0, 1, 0, 0] = 1  # large + small bowel overlap
    masks[0, 1, 1, 1] = masks[0, 2, 1, 1] = 1  # small bowel + stomach overlap
    masks[0, 0, 0, 1] = 1
    assert class_map(masks)[0].tolist() == [[2, 1], [0, 3]]


def test_validation_scores_whole_case_days_with_the_evaluate_code():
    """Batches cut across case-days; each case-day is scored as one volume, as evaluate does."""
    from core.metrics import ScoreAccumulator

    rng = np.random.default_rng(0)
    pred = rng.random((7, 3, 16, 16)) < 0.3
    truth = rng.random((7, 3, 16, 16)) < 0.3
    codes = np.array([0, 0, 0, 1, 1, 1, 1])
    names = ["case1_day1", "case2_day1"]
    collector = _CaseDayScores()
    for part in (slice(0, 2), slice(2, 5), slice(5, 7)):
        collector.add(codes[part], pred[part], truth[part], names)
    collector.flush(names)
    expected = ScoreAccumulator()
    expected.add_case_day("case1_day1", pred[:3], truth[:3])
    expected.add_case_day("case2_day1", pred[3:], truth[3:])
    got, want = collector.scores.result(), expected.result()
    assert (got.dice, got.hausdorff, got.score) == (want.dice, want.hausdorff, want.score)
    assert list(got.case_days) == names


@pytest.mark.parametrize("mode", ["multilabel", "multiclass"])
def test_module_outputs_logits_at_input_size_and_learns(mode):
    torch.manual_seed(0)
    cfg = apply_overrides(StudioConfig(), [f"model.mode={mode}", "data.augment=false"])
    module = SegmentationModule(cfg.to_dict())
    x = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, 3, 64, 64)
    masks[:, 2, 10:30, 10:30] = 1
    logits = module(x)
    assert logits.shape == (2, 3 if mode == "multilabel" else 4, 64, 64)
    optimiser = torch.optim.AdamW(module.parameters(), lr=1e-3)
    first = module.loss(module(x), masks).item()
    for _ in range(15):
        optimiser.zero_grad()
        loss = module.loss(module(x), masks)
        loss.backward()
        optimiser.step()
    assert loss.item() < first
    assert predict_masks(module(x), mode).shape == (2, 3, 64, 64)
