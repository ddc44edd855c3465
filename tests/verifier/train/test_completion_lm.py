"""The completion-only logits path gives the same loss (and gradients) as TRL's default path."""

from __future__ import annotations

from pathlib import Path

import pytest

ROWS = [
    {
        "prompt": [{"role": "user", "content": f"Question {i}: is the sky blue? Rubrics: 1. blue 2. sky"}],
        "completion": [
            {"role": "assistant", "content": '["support", "not_support"]' if i % 2 else '["support"]'}
        ],
    }
    for i in range(8)
]


def _trainer(
    model_dir: Path, tmp_path: Path, use_lora: bool, bf16: bool = False, autocast_loss: bool = False
):
    from datasets import Dataset

    from verifier.train.completion_lm import CompletionOnlySFTTrainer
    from verifier.train.sft import sft_config
    from verifier.train.stage import load_model_and_tokenizer

    config = sft_config(
        model_name_or_path=str(model_dir),
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        use_peft=use_lora,
        lora_r=4,
        lora_alpha=8,
        bf16=bf16,
    )
    model, tokenizer = load_model_and_tokenizer(str(model_dir), "float32")
    return CompletionOnlySFTTrainer(
        model=model,
        args=config.training,
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=config.peft_config(),
        completion_only_logits=True,
        autocast_loss=autocast_loss,
    )


def _loss_and_grads(trainer, batch, completion_only: bool):
    trainer.model.zero_grad()
    trainer.completion_only_logits = completion_only
    # TRL's path gets mixed precision from the prepared model's forward, which this unprepared model lacks
    with trainer.accelerator.autocast():
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=None)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("use_lora", [False, True])
def test_completion_only_loss_matches_default(tiny_model_dir: Path, tmp_path: Path, use_lora: bool) -> None:
    import torch

    trainer = _trainer(tiny_model_dir, tmp_path, use_lora)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == -100).float().mean() > 0.5  # most positions are prompt, no loss there
    default_loss, default_grads = _loss_and_grads(trainer, batch, completion_only=False)
    ours_loss, ours_grads = _loss_and_grads(trainer, batch, completion_only=True)
    assert torch.isfinite(ours_loss) and ours_loss > 0
    torch.testing.assert_close(ours_loss, default_loss, rtol=1e-5, atol=1e-5)
    assert default_grads.keys() == ours_grads.keys() and default_grads
    for name, grad in default_grads.items():
        torch.testing.assert_close(ours_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_completion_only_loss_counts_only_labelled_positions(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Changing a prompt-only position's label to -100 changes nothing; a completion label does."""
    import torch

    from verifier.train.completion_lm import completion_only_loss

    trainer = _trainer(tiny_model_dir, tmp_path, use_lora=False)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        base = completion_only_loss(trainer.model, batch)
        labelled = (batch["labels"][0] != -100).nonzero().flatten()
        masked = dict(batch, labels=batch["labels"].clone())
        masked["labels"][0, labelled[0]] = -100
        fewer = completion_only_loss(trainer.model, masked)
    assert int(fewer.num_tokens) == int(base.num_tokens) - 1
    assert not torch.isclose(fewer.loss, base.loss)


def test_autocast_loss_is_trls_path_under_mixed_precision(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    from verifier.train.completion_lm import completion_only_loss

    trainer = _trainer(tiny_model_dir, tmp_path, use_lora=False, bf16=True, autocast_loss=True)
    batch = next(iter(trainer.get_train_dataloader()))
    default_loss, _ = _loss_and_grads(trainer, batch, completion_only=False)
    ours_loss, _ = _loss_and_grads(trainer, batch, completion_only=True)
    float32_loss = completion_only_loss(trainer.model, dict(batch)).loss  # the same path without autocast
    torch.testing.assert_close(ours_loss, default_loss, rtol=1e-5, atol=1e-5)  # both in bf16
    assert abs(float(ours_loss) - float(float32_loss)) > 1e-4  # and bf16 shows: not a float32 loss
    trainer.autocast_loss = False  # the default: the weights' own dtypes (float32 here), even with bf16 set
    plain_loss = trainer.compute_loss(trainer.model, dict(batch))
    torch.testing.assert_close(plain_loss, float32_loss, rtol=1e-6, atol=1e-6)
