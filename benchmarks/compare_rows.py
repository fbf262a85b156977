"""Are the rows of this checkout byte-identical to another revision's? Digests of every column
of the rows `generate` makes, for several configurations, from both codebases (each column's
rows concatenated: how `generate` batches them is not part of the rows).

    python benchmarks/compare_rows.py --base DIR [--rows 1500]

DIR is a checkout of the other revision (e.g. `git worktree add /tmp/base v0.1.0`). Each side
runs in its own interpreter with its own checkout first on sys.path; the script prints one line
per configuration and exits 1 when any digest differs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = [  # (states, band, extra NCAConfig fields)
    (10, "0.5-1.0", {}), (10, "0.3-0.4", {}), (10, "0.2-0.3", {}), (10, "0.4-0.5", {}),
    (5, "0.3-0.4", {}), (15, "0.5-1.0", {}), (15, "0.2-0.3", {}), (2, "0.1-0.3", {}),
    (10, "0.02-1.0", {"sims_per_rule": 3}), (10, "0.0-1.0", {}),
]

DIGEST = r"""
import hashlib, json, sys
import numpy as np
from ncagen.config import Band, NCAConfig
from ncagen.generate import generate
rows, configs = int(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for states, band, extra in configs:
    cfg = NCAConfig(states=states, **extra)
    batches = list(generate(cfg, Band.parse(band), 0xC0FFEE + states, rows))
    h = hashlib.sha256()  # of the rows, whatever batches they came in
    for k in sorted(batches[0]):
        h.update(k.encode()); h.update(np.concatenate([b[k] for b in batches]).tobytes())
    out[f"n={states} band={band} {extra or ''}"] = h.hexdigest()[:16]
print(json.dumps(out))
"""


def digests(checkout: pathlib.Path, rows: int) -> dict:
    res = subprocess.run([sys.executable, "-c", DIGEST, str(rows), json.dumps(CONFIGS)],
                         env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True, cwd=checkout)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, type=pathlib.Path, help="checkout of the other revision")
    ap.add_argument("--rows", type=int, default=1500)
    args = ap.parse_args()
    ours, theirs = digests(REPO, args.rows), digests(args.base.resolve(), args.rows)
    same = True
    for name in ours:
        ok = ours[name] == theirs.get(name)
        same &= ok
        print(f"{'same' if ok else 'DIFFERENT':>9}  {name:<40} {ours[name]}  {theirs.get(name)}")
    print(f"{len(ours)} configurations x {args.rows} rows: "
          f"{'byte-identical' if same else 'ROWS DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
