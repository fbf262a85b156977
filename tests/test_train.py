"""Training from a built dataset with standard tools: the HF Trainer on a tiny Llama, and the
collator's first-grid mask."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from ncagen.config import NCAConfig
from ncagen.train import (IGNORE_INDEX, NCACollator, grid_losses, hf_trainer, load_split,
                          tiny_llama, token_losses)

pytest.importorskip("transformers")

CONFIG = "band_50_100"
CFG = NCAConfig(seq_len=380)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """200 train and 40 validation rows of band 0.5-1.0, through the real CLI."""
    out = tmp_path_factory.mktemp("train") / "nca"
    subprocess.run([sys.executable, "-m", "ncagen.build", "--band", "0.5-1.0", "--rows", "200",
                    "--val-rows", "40", "--seq-len", "380", "--batch", "256", "--executor", "local",
                    "--out", str(out)], check=True, capture_output=True)
    return out


def test_collator_masks_exactly_the_first_grid(built):
    rows = [load_split(str(built), CONFIG)[i] for i in range(3)]
    batch = NCACollator(CFG)(rows)
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.dtype == torch.long and ids.shape == (3, 380)
    assert ids.tolist() == [r["input_ids"] for r in rows]
    g = CFG.tokens_per_grid
    assert (labels[:, :g] == IGNORE_INDEX).all()
    assert torch.equal(labels[:, g:], ids[:, g:]) and (labels[:, g:] != IGNORE_INDEX).all()
    assert (ids[:, 0] == CFG.grid_start).all() and (ids[:, g - 1] == CFG.grid_end).all()
    assert torch.equal(NCACollator(CFG, mask_first_grid=False)(rows)["labels"], ids)

    # the model's loss is the mean over the tokens of grids 1.. (its own label shift included)
    model = tiny_llama(CFG, layers=1, hidden=32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(30)  # sharp logits: token losses differ widely
        loss = model(**batch).loss.item()
    per_token = token_losses(model, ids)  # (3, 380)
    assert loss == pytest.approx(per_token[:, g:].mean(), rel=1e-5)
    for off_by_one in (per_token[:, g - 1:].mean(), per_token[:, g + 1:].mean()):
        assert abs(loss - off_by_one) > 1e-4 * loss


def test_collator_refuses_rows_of_another_length():
    with pytest.raises(ValueError, match="seq_len"):
        NCACollator(CFG)([{"input_ids": np.zeros(100, np.int32)}])


def test_hf_trainer_loss_falls(built, tmp_path):
    train = load_split(str(built), CONFIG, "train")
    val = load_split(str(built), CONFIG, "validation")
    assert len(train) == 200 and len(val) == 40
    val = val.select(range(8))
    model = tiny_llama(CFG, layers=2, hidden=64)
    trainer = hf_trainer(model, train, CFG, str(tmp_path / "run"), steps=12, batch_size=4,
                         lr=1e-2, eval_dataset=val, logging_steps=1, warmup_steps=2)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < losses[0] - 0.2
    after = trainer.evaluate()["eval_loss"]
    assert after < before - 0.2
    per_grid = grid_losses(model, np.array(val["input_ids"][:8]), CFG)
    assert per_grid.shape == (CFG.grids_per_sequence,) and np.isfinite(per_grid).all()


def test_load_split_with_the_card_is_load_dataset(built, tmp_path):
    card = pytest.importorskip("ncagen.card")
    import shutil

    from datasets import load_dataset

    with_card = tmp_path / "nca"
    shutil.copytree(built, with_card)
    card.write_card(str(with_card), figures=False)
    direct = load_dataset(str(with_card), CONFIG, split="validation")
    assert load_split(str(with_card), CONFIG, "validation")["rule_seed"] == direct["rule_seed"]
    assert load_split(str(built), CONFIG, "validation")["rule_seed"] == direct["rule_seed"]
