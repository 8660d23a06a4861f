"""The objective's terms on hand-checkable tensors: Dice, BCE + Dice, the judge's IoU target, text CE."""

import torch

from model.training.losses import mask_dice, mask_loss, soft_iou, text_ce


def test_dice_loss_is_zero_for_a_perfect_mask_and_one_for_a_disjoint_one():
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    perfect = (target * 2 - 1) * 50
    assert mask_dice(perfect, target) < 1e-3
    assert mask_dice(-perfect, target) > 0.99
    parts = mask_loss(perfect, target)
    assert torch.isclose(parts["mask"], 2 * parts["bce"] + 0.5 * parts["dice"])


def test_soft_iou_is_the_judge_target():
    # prediction covers 2 pixels, truth 1 of them and 1 more: I = 1, U = 3
    logits = torch.tensor([[[5.0, 5.0], [-5.0, -5.0]]])
    truth = torch.tensor([[[1, 0], [1, 0]]])
    assert torch.isclose(soft_iou(logits, truth), torch.tensor([1 / 3]))
    assert soft_iou(-logits.abs(), torch.zeros_like(truth)).item() == 1.0


def test_text_ce_predicts_the_next_token_and_ignores_prompts():
    logits = torch.full((1, 3, 4), -20.0)
    logits[0, 0, 2] = logits[0, 1, 3] = 20.0  # position t predicts label t + 1
    labels = torch.tensor([[-100, 2, 3]])
    assert text_ce(logits, labels) < 1e-6
    assert text_ce(logits, torch.tensor([[-100, 3, -100]])) > 10
