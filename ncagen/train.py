"""Training on NCA rows with standard tools: batches with labels, a tiny Llama, per-grid losses.

`NCACollator` turns rows (from `datasets`, an `NCAStream`, or plain dicts) into
`input_ids` / `attention_mask` / `labels` for any Hugging Face causal LM. By default the first
grid's tokens get label -100 and so carry no loss, as in the paper: nothing precedes the first
grid in the sequence, so there is no rule to infer yet, only a random start to guess.
`grid_losses` is the measure of in-context rule inference: the mean loss on each grid of a
sequence, which falls along the sequence as the model works the rule out from earlier grids.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from .config import NCAConfig
from .extras import require

IGNORE_INDEX = -100  # the label value Hugging Face losses skip


def first_grid_labels(input_ids, cfg: NCAConfig, mask_first_grid: bool = True):
    """Labels for input_ids (B, L) long tensor: a copy, with the first grid set to -100 if asked."""
    labels = input_ids.clone()
    if mask_first_grid:
        labels[:, :cfg.tokens_per_grid] = IGNORE_INDEX
    return labels


class NCACollator:
    """Rows -> {input_ids, attention_mask, labels} long tensors; masks the first grid by default."""

    def __init__(self, cfg: NCAConfig, mask_first_grid: bool = True):
        self.cfg, self.mask_first_grid = cfg, mask_first_grid

    def __call__(self, rows: list[dict]) -> dict:
        torch = require("torch", "train", "NCACollator")

        ids = torch.stack([torch.as_tensor(np.asarray(r["input_ids"]), dtype=torch.long)
                           for r in rows])  # (B, seq_len)
        if ids.shape[1] != self.cfg.seq_len:
            raise ValueError(f"rows have {ids.shape[1]} tokens, the config says seq_len={self.cfg.seq_len}")
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "labels": first_grid_labels(ids, self.cfg, self.mask_first_grid)}


def tiny_llama(cfg: NCAConfig, layers: int = 2, hidden: int = 64, heads: int = 4,
               seed: int = 0):
    """A small LlamaForCausalLM over the NCA vocabulary, built from a config (nothing downloaded)."""
    torch = require("torch", "train", "tiny_llama")
    require("transformers", "train", "tiny_llama")
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=cfg.seq_len,
                         tie_word_embeddings=True, bos_token_id=cfg.grid_start,
                         eos_token_id=cfg.grid_end, pad_token_id=None)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def load_split(path: str, config_name: str, split: str = "train", **kwargs):
    """`datasets.load_dataset(path, config_name, split=split)`; a built directory without its
    card (README.md) is read from its Parquet files directly."""
    import datasets

    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "README.md")):
        files = os.path.join(path, "data", config_name, f"{split}-*.parquet")
        return datasets.load_dataset("parquet", data_files={split: files}, split=split, **kwargs)
    return datasets.load_dataset(path, config_name, split=split, **kwargs)


def train_steps(model, batches: Iterable[dict], steps: int, lr: float = 3e-3,
                device: str = "cpu", warmup: int = 10, after_step=None) -> list[float]:
    """A plain PyTorch loop: AdamW with linear warmup over (up to) `steps` batches; returns the
    losses. `after_step(step, model)`, when given, runs after each step (1-based), e.g. to
    evaluate."""
    import itertools

    torch = require("torch", "train", "train_steps")

    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)))
    losses = []
    for batch in itertools.islice(batches, steps):
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if after_step is not None:
            after_step(len(losses), model)
    return losses


def hf_trainer(model, train_dataset, cfg: NCAConfig, out_dir: str, steps: int, batch_size: int = 8,
               lr: float = 3e-3, mask_first_grid: bool = True, eval_dataset=None, **args):
    """A Hugging Face Trainer for `steps` steps with NCACollator, on CPU unless told otherwise."""
    torch = require("torch", "train", "hf_trainer")
    require("transformers", "train", "hf_trainer")
    require("accelerate", "train", "hf_trainer")  # the Trainer's own requirement
    from transformers import Trainer, TrainingArguments

    defaults = dict(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch_size,
                    per_device_eval_batch_size=batch_size, learning_rate=lr, warmup_steps=10,
                    weight_decay=0.0, logging_steps=max(1, steps // 20), save_strategy="no",
                    report_to="none", remove_unused_columns=False, dataloader_num_workers=0,
                    disable_tqdm=True, seed=0,
                    dataloader_pin_memory=torch.cuda.is_available())
    return Trainer(model=model, args=TrainingArguments(**{**defaults, **args}),
                   train_dataset=train_dataset, eval_dataset=eval_dataset,
                   data_collator=NCACollator(cfg, mask_first_grid))


def token_losses(model, input_ids, device: str = "cpu"):
    """Next-token cross-entropy at every position (B, L); position 0 has no prediction (nan)."""
    torch = require("torch", "train", "token_losses")

    model.to(device).eval()
    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long, device=device)  # (B, L)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()  # (B, L, V)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:],
                                           reduction="none")  # (B, L-1)
    out = torch.full(ids.shape, float("nan"))
    out[:, 1:] = ce.cpu()
    return out.numpy()


def grid_losses(model, input_ids, cfg: NCAConfig, device: str = "cpu",
                batch_size: int = 16) -> np.ndarray:
    """Mean next-token loss on each grid of the sequence, averaged over rows: (grids,)."""
    ids = np.asarray(input_ids)
    per_token = np.concatenate([token_losses(model, ids[i:i + batch_size], device)
                                for i in range(0, len(ids), batch_size)])  # (B, L)
    grid_of = np.arange(1, ids.shape[1]) // cfg.tokens_per_grid  # (L-1,) grid of each predicted token
    col = per_token[:, 1:].mean(axis=0)  # (L-1,)
    return np.bincount(grid_of, weights=col) / np.bincount(grid_of)


# analysis helpers for the notebooks ---------------------------------------------------------
def random_rule_ratios(cfg: NCAConfig, count: int, seed: int = 0, device: str = "cpu",
                       batch: int = 1024) -> np.ndarray:
    """gzip ratios of `count` random rules' trajectories, unfiltered (the band-0-1 distribution)."""
    from . import complexity
    from .generate import candidate_seeds, rollout_tokens
    from .rng import derive

    key, out = int(derive(seed, cfg.states, 0xA11)), []
    for start in range(0, count, batch):
        seeds, sims = candidate_seeds(key, start, min(batch, count - start), cfg.sims_per_rule)
        head, _, _ = rollout_tokens(cfg, seeds, sims, cfg.ratio_grids, device)  # (B, R, P)
        out.append(complexity.gzip_ratios(head, cfg.gzip_level))
    return np.concatenate(out)


def text_gzip_ratios(data: bytes, cfg: NCAConfig) -> np.ndarray:
    """gzip ratios of text as the NCA rows get theirs: bytes -> int32 tokens, windows of the
    same token count as the ratio's first grids (360 tokens for the defaults)."""
    from . import complexity

    window = cfg.ratio_grids * cfg.patches_per_grid
    tokens = np.frombuffer(data, np.uint8).astype(np.int32)
    n = len(tokens) // window
    if n == 0:
        raise ValueError(f"need at least {window} bytes of text, got {len(tokens)}")
    return complexity.gzip_ratios(tokens[:n * window].reshape(n, 1, window), cfg.gzip_level)


def rank_frequency(input_ids, cfg: NCAConfig) -> np.ndarray:
    """Counts of each patch token seen (delimiters excluded), most frequent first."""
    ids = np.asarray(input_ids).reshape(-1)
    counts = np.bincount(ids[ids < cfg.grid_start], minlength=cfg.grid_start)
    return np.sort(counts[counts > 0])[::-1]


def zipf_slope(counts: np.ndarray, ranks: int = 1000) -> float:
    """Slope of log(frequency) against log(rank) over the top `ranks` ranks (Zipf's law: ~ -1)."""
    top = np.asarray(counts[:ranks], np.float64)
    r = np.arange(1, len(top) + 1)
    return float(np.polyfit(np.log(r), np.log(top), 1)[0])


def stacked_strips(rows, cfg: NCAConfig, grids: int = 8, scale: int = 6):
    """One strip of the first `grids` grids per row, stacked top to bottom, as a PIL image."""
    from PIL import Image

    from .tokens import decode_sequence, render_strip

    strips = [np.asarray(render_strip(decode_sequence(ids, cfg)[:grids], cfg.states, scale))
              for ids in rows]
    gap = np.full((scale, strips[0].shape[1], 3), 255, np.uint8)
    return Image.fromarray(np.concatenate([s for st in strips for s in (st, gap)][:-1]))


def animation_gif(grids: np.ndarray, n: int, scale: int = 16, ms: int = 250) -> bytes:
    """Grids (T, G, G) -> an animated GIF of the trajectory, one frame per grid."""
    import io

    from .tokens import render_strip

    frames = [render_strip(g[None], n, scale) for g in grids]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return buf.getvalue()
