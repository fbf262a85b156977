"""Measured transfer (issue 12): does NCA pre-pre-training help a tiny Llama learn code?

Five arms, each over several seeds, all ending in the same stage 2: `stage2_steps` steps of
next-byte prediction on the Python standard library's own sources (`*.py` under
`sysconfig.get_paths()["stdlib"]`, site-packages excluded; held-out files chosen by a hash of
their path), from the same batches for every arm of a seed.

- `scratch`: stage 2 only.
- `nca_30_40`, `nca_50_100`, `nca_mix`: first `stage1_steps` steps on NCA rows generated on the
  fly (`NCAStream`) of band 0.3-0.4, band 0.5-1.0, or their 50/50 mixture; then the embeddings
  and the output layer are re-initialised for the byte vocabulary (as the paper does) and the
  rest of the network is kept.
- `code_warmup`: the same number of stage-1 steps and tokens on the code corpus itself, then the
  same re-initialisation: the compute-matched control.

Reported: held-out loss every `eval_every` stage-2 steps (mean, min, max and std over seeds),
and, per seed, the first evaluated step at which an arm reaches the held-out loss that scratch
ends on with that seed. A table is printed; `--out` writes everything as JSON
(`notebooks/04_transfer.ipynb` plots it).

    python benchmarks/transfer.py --setting cpu --out benchmarks/results/transfer_cpu.json
    python benchmarks/transfer.py --setting gpu --device cuda --out transfer_gpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import platform
import sys
import sysconfig
import time
import zlib
from dataclasses import dataclass

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ncagen.config import NCAConfig  # noqa: E402
from ncagen.stream import NCAStream  # noqa: E402
from ncagen.train import first_grid_labels, train_steps  # noqa: E402

BYTE_VOCAB = 257  # 256 byte values and a separator between files
SEPARATOR = 256
ARMS = {  # arm -> stage-1 data: an NCA band or mixture, "code", or None (no stage 1)
    "scratch": None,
    "nca_30_40": "0.3-0.4",
    "nca_50_100": "0.5-1.0",
    "nca_mix": "0.3-0.4:1,0.5-1.0:1",
    "code_warmup": "code",
}


@dataclass(frozen=True)
class Setting:
    """Sizes of one experiment: model, NCA data, both stages, evaluation, seeds."""

    layers: int
    hidden: int
    heads: int
    states: int  # NCA alphabet
    nca_seq_len: int  # tokens per stage-1 row (NCA and code warm-up alike)
    code_seq_len: int  # bytes per stage-2 window
    batch: int
    stage1_steps: int
    stage2_steps: int
    eval_every: int
    eval_windows: int  # held-out windows of code_seq_len bytes, the same for every run
    seeds: int
    lr: float = 3e-3
    warmup: int = 10
    max_files: int | None = None  # cap on corpus files (evenly spread), for the tiny setting


SETTINGS = {
    "tiny": Setting(layers=1, hidden=32, heads=2, states=10, nca_seq_len=380, code_seq_len=128,
                    batch=4, stage1_steps=8, stage2_steps=30, eval_every=10, eval_windows=16,
                    seeds=3, warmup=5, max_files=200),
    "cpu": Setting(layers=2, hidden=64, heads=4, states=10, nca_seq_len=380, code_seq_len=256,
                   batch=8, stage1_steps=150, stage2_steps=300, eval_every=25, eval_windows=64,
                   seeds=3),
    "gpu": Setting(layers=4, hidden=256, heads=4, states=10, nca_seq_len=1024, code_seq_len=1024,
                   batch=32, stage1_steps=3000, stage2_steps=3000, eval_every=100,
                   eval_windows=256, seeds=5, lr=1e-3, warmup=100),
}


# the code corpus ----------------------------------------------------------------------------
def stdlib_files(max_files: int | None = None) -> list[pathlib.Path]:
    """The standard library's *.py files (no site-packages), sorted by path; every k-th if capped."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts))
    if max_files is not None and len(files) > max_files:
        files = files[::math.ceil(len(files) / max_files)]
    return files


def is_held_out(rel_path: str) -> bool:
    """A file's split, fixed by its path alone: about one file in ten is held out."""
    return zlib.crc32(rel_path.encode()) % 10 == 0


def load_corpus(max_files: int | None = None) -> dict[str, torch.Tensor]:
    """{"train", "held_out"} -> one long tensor of byte tokens each, files joined by SEPARATOR."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    parts = {"train": [], "held_out": []}
    for path in stdlib_files(max_files):
        split = "held_out" if is_held_out(path.relative_to(root).as_posix()) else "train"
        parts[split] += [np.frombuffer(path.read_bytes(), np.uint8), [SEPARATOR]]
    return {split: torch.from_numpy(np.concatenate(chunks).astype(np.int64))
            for split, chunks in parts.items()}


def code_batches(tokens: torch.Tensor, batch: int, seq_len: int, seed: int):
    """Endless batches of random windows (B, seq_len) of a token tensor, in a seeded order."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(tokens) - seq_len, (batch,), generator=gen)
        ids = torch.stack([tokens[s:s + seq_len] for s in starts.tolist()])  # (B, seq_len)
        yield {"input_ids": ids, "labels": ids}


def held_out_windows(tokens: torch.Tensor, count: int, seq_len: int) -> torch.Tensor:
    """`count` windows (count, seq_len) evenly spaced over the held-out tokens: fixed for all runs."""
    starts = np.linspace(0, len(tokens) - seq_len - 1, count).astype(int)
    return torch.stack([tokens[s:s + seq_len] for s in starts])


# NCA data -------------------------------------------------------------------------------------
def nca_batches(cfg: NCAConfig, band: str, rows: int, batch: int, seed: int):
    """Batches of NCA rows of a band or mixture (first grid carries no loss), in stream order.

    All rows are generated before the first batch, so that generation's threads are done before
    training's start (on a small machine the two would fight over the cores)."""
    stream = NCAStream(cfg, band, seed=seed, rows=rows, shard_rows=min(rows, 256))
    ids = torch.stack([torch.as_tensor(np.asarray(r["input_ids"]), dtype=torch.long)
                       for r in stream])  # (rows, seq_len)
    return iter([{"input_ids": b, "labels": first_grid_labels(b, cfg)}
                 for b in ids.split(batch) if len(b) == batch])


# model and training ---------------------------------------------------------------------------
def llama(vocab: int, s: Setting, seed: int):
    """A small untied LlamaForCausalLM from a config (nothing downloaded), seeded init."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=s.hidden, intermediate_size=4 * s.hidden,
                         num_hidden_layers=s.layers, num_attention_heads=s.heads,
                         num_key_value_heads=s.heads,
                         max_position_embeddings=max(s.nca_seq_len, s.code_seq_len),
                         tie_word_embeddings=False, bos_token_id=None, eos_token_id=None,
                         pad_token_id=None)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def reinit_vocab(body, vocab: int, s: Setting, seed: int):
    """A fresh model over `vocab` with `body`'s layers: new embeddings and output layer."""
    model = llama(vocab, s, seed)
    kept = {k: v for k, v in body.state_dict().items()
            if not k.startswith(("model.embed_tokens.", "lm_head."))}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    assert sorted(missing) == ["lm_head.weight", "model.embed_tokens.weight"], missing
    assert not unexpected, unexpected
    return model


@torch.no_grad()
def held_out_loss(model, windows: torch.Tensor, batch: int = 16) -> float:
    """Mean next-byte loss over the held-out windows (N, L), on the model's device."""
    model.eval()
    total, device = 0.0, next(model.parameters()).device
    for i in range(0, len(windows), batch):
        ids = windows[i:i + batch].to(device)
        total += model(input_ids=ids, labels=ids).loss.item() * len(ids)
    model.train()
    return total / len(windows)


def train(model, batches, steps: int, s: Setting, device: str,
          eval_fn=None) -> tuple[list[float], dict]:
    """AdamW with linear warmup for `steps` batches; returns the training losses and, if
    `eval_fn` is given, {step: held-out loss} at step 0 and every `eval_every` steps."""
    model.to(device)  # before the step-0 evaluation
    evals = {0: eval_fn(model)} if eval_fn is not None else {}

    def evaluate(step: int, model) -> None:
        if eval_fn is not None and (step % s.eval_every == 0 or step == steps):
            evals[step] = eval_fn(model)

    losses = train_steps(model, batches, steps, lr=s.lr, device=device, warmup=s.warmup,
                         after_step=evaluate)
    if len(losses) != steps:
        raise RuntimeError(f"stage data ran out after {len(losses)} of {steps} steps")
    return losses, evals


def run_arm(arm: str, seed: int, s: Setting, corpus: dict, windows: torch.Tensor,
            device: str = "cpu") -> dict:
    """One arm and seed: optional stage 1, re-initialised vocabulary, stage 2 with evaluation."""
    source = ARMS[arm]
    t0 = t_gen = time.perf_counter()
    stage1 = []
    if source is None:
        model = llama(BYTE_VOCAB, s, seed)
        t_gen = time.perf_counter()
    else:
        if source == "code":
            body = llama(BYTE_VOCAB, s, seed)
            data = code_batches(corpus["train"], s.batch, s.nca_seq_len, seed + 10_000)
        else:
            cfg = NCAConfig(states=s.states, seq_len=s.nca_seq_len)
            body = llama(cfg.vocab_size, s, seed)
            data = nca_batches(cfg, source, s.stage1_steps * s.batch, s.batch, seed)
        t_gen = time.perf_counter()
        stage1, _ = train(body, data, s.stage1_steps, s, device)
        model = reinit_vocab(body.cpu(), BYTE_VOCAB, s, seed + 20_000)
    t1 = time.perf_counter()
    stage2, evals = train(model, code_batches(corpus["train"], s.batch, s.code_seq_len, seed),
                          s.stage2_steps, s, device, lambda m: held_out_loss(m, windows))
    return {"arm": arm, "seed": seed, "stage1_loss": stage1, "stage2_loss": stage2,
            "held_out": {str(k): v for k, v in evals.items()},
            "seconds": {"data": t_gen - t0, "stage1": t1 - t_gen,  # data: model building included
                        "stage2": time.perf_counter() - t1}}


# summary --------------------------------------------------------------------------------------
def steps_to_reach(held_out: dict, target: float) -> int | None:
    """First evaluated step whose held-out loss is at most `target`, or None."""
    for step, loss in sorted(((int(k), v) for k, v in held_out.items())):
        if loss <= target:
            return step
    return None


def summarise(runs: list[dict], arms: list[str], seeds: list[int]) -> dict:
    """Per arm: held-out loss per evaluated step over seeds (mean/min/max/std), and steps to reach
    scratch's final held-out loss of the same seed."""
    by = {(r["arm"], r["seed"]): r for r in runs}
    out = {}
    for arm in arms:
        steps = sorted(int(k) for k in by[(arm, seeds[0])]["held_out"])
        curves = np.array([[by[(arm, sd)]["held_out"][str(k)] for k in steps] for sd in seeds])
        reach = []
        for sd in seeds:
            scratch = by[("scratch", sd)]["held_out"]
            target = scratch[str(max(int(k) for k in scratch))]
            reach.append(steps_to_reach(by[(arm, sd)]["held_out"], target))
        out[arm] = {"steps": steps, "mean": curves.mean(0).tolist(), "min": curves.min(0).tolist(),
                    "max": curves.max(0).tolist(), "std": curves.std(0).tolist(),
                    "steps_to_scratch_final": reach}
    return out


def table(summary: dict, every: int = 1) -> str:
    """A Markdown table: held-out loss mean [min, max] at evaluated steps, and steps to reach."""
    arms = list(summary)
    steps = summary[arms[0]]["steps"][::every]
    if steps[-1] != summary[arms[0]]["steps"][-1]:
        steps.append(summary[arms[0]]["steps"][-1])
    lines = ["| arm | " + " | ".join(f"step {k}" for k in steps) + " | steps to scratch's final |",
             "|---" * (len(steps) + 2) + "|"]
    for arm in arms:
        a = summary[arm]
        cells = [f"{a['mean'][i]:.3f} [{a['min'][i]:.3f}, {a['max'][i]:.3f}]"
                 for i in (a["steps"].index(k) for k in steps)]
        reach = ", ".join("-" if r is None else str(r) for r in a["steps_to_scratch_final"])
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {reach} |")
    return "\n".join(lines)


def machine() -> dict:
    """Where the figures were measured."""
    import os

    return {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def run(setting: str, seeds: int | None = None, arms: list[str] | None = None,
        device: str = "cpu", log=print) -> dict:
    """Every arm over every seed of a setting; returns the JSON-ready results."""
    s = SETTINGS[setting]
    seeds = list(range(s.seeds if seeds is None else seeds))
    arms = list(ARMS) if arms is None else arms
    if "scratch" not in arms:
        raise ValueError("the arms must include scratch, the baseline")
    t0 = time.perf_counter()
    corpus = load_corpus(s.max_files)
    windows = held_out_windows(corpus["held_out"], s.eval_windows, s.code_seq_len)
    runs = []
    for seed in seeds:
        for arm in arms:
            r = run_arm(arm, seed, s, corpus, windows, device)
            final = r["held_out"][str(s.stage2_steps)]
            log(f"seed {seed} {arm:12s} held-out {r['held_out']['0']:.3f} -> {final:.3f}  "
                "({data:.0f} s data, {stage1:.0f} s stage 1, {stage2:.0f} s stage 2)".format(**r["seconds"]))
            runs.append(r)
    return {"setting": setting, "config": dataclasses.asdict(s), "arms": arms, "seeds": seeds,
            "device": device,
            "stage1_data": {a: ARMS[a] for a in arms},
            "corpus": {"root": sysconfig.get_paths()["stdlib"],
                       "train_bytes": len(corpus["train"]), "held_out_bytes": len(corpus["held_out"])},
            "summary": summarise(runs, arms, seeds), "runs": runs, "machine": machine(),
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict:
    """Command line: run a setting, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="tiny")
    p.add_argument("--seeds", type=int, help="number of seeds (default: the setting's)")
    p.add_argument("--arms", help=f"comma-separated subset of {','.join(ARMS)} (scratch required)")
    p.add_argument("--device", default="cpu", help="torch device for training (NCA rows are "
                   "generated on the CPU)")
    p.add_argument("--out", help="write the results JSON here")
    args = p.parse_args(argv)
    arms = args.arms.split(",") if args.arms else None
    if arms and set(arms) - set(ARMS):
        p.error(f"unknown arms: {', '.join(sorted(set(arms) - set(ARMS)))}")
    if arms and "scratch" not in arms:
        p.error("--arms must include scratch, the baseline")
    if args.seeds is not None and args.seeds < 1:
        p.error("--seeds must be >= 1")
    results = run(args.setting, args.seeds, arms, args.device)
    print(table(results["summary"], every=max(1, len(results["summary"]["scratch"]["steps"]) // 6)))
    if args.out:
        from ncagen.storage import Storage

        out = pathlib.Path(args.out).resolve()
        with Storage(str(out.parent)).atomic_write(out.name) as sink:  # never half a file
            sink.write((json.dumps(results, indent=1) + "\n").encode())
    return results


if __name__ == "__main__":
    main()
