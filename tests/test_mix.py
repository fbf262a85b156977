"""Network widths (--conv-channels, --hidden) and band mixtures (--mix): names, proportions,
rows in their own band, regeneration, the stream, resume, recipes."""

import collections
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from ncagen.build import build
from ncagen.cli import build_main, build_parser, config_from_args
from ncagen.complexity import gzip_ratio_of_row
from ncagen.config import Band, ConfigError, Mix, NCAConfig, config_name
from ncagen.generate import mix_order, regenerate
from ncagen.plan import BuildConfig, mix_counts, plan, shard_key
from ncagen.recipe import recipe_config
from ncagen.tokens import decode_sequence, encode_grids, from_sequence

SMALL = ["--seq-len", "380", "--executor", "local"]
MIX = "0.3-0.4:1,0.5-1.0:3"
MIX_NAME = "mix_30_40x1_50_100x3"


def _rows(out, config, split="train") -> dict:
    files = sorted((out / "data" / config).glob(f"{split}-*.parquet"))
    return pq.read_table(files).to_pydict()


def _config(argv):
    return config_from_args(build_parser().parse_args(argv))


# names -----------------------------------------------------------------------------------------
def test_default_names_are_unchanged_and_widths_are_named():
    d = NCAConfig()
    assert config_name(Band(0.5, 1.0), d) == Band(0.5, 1.0).name() == "band_50_100"
    assert Band(0.3, 0.4).name(15) == "band_30_40_states_15"
    assert config_name(Band(0.5, 1.0), NCAConfig(conv_channels=8, hidden=32)) == "band_50_100_c8_h32"
    assert config_name(Band(0.5, 1.0), NCAConfig(states=15, hidden=8)) == "band_50_100_states_15_c4_h8"


def test_mix_names_and_parsing():
    assert Mix.parse("0.3-0.4:1,0.5-1.0:1").name() == "mix_30_40_50_100"
    assert Mix.parse(MIX).name() == MIX_NAME
    assert Mix.parse("0.3-0.4:0.5,0.5-1.0:1").name(15) == "mix_30_40x0p5_50_100x1_states_15"
    m = Mix.parse("0.3-0.4:0.3333333333333333,0.5-1.0:1")
    assert Mix.parse(str(m)) == m  # the manifest's text gives the same mixture back


@pytest.mark.parametrize("text, words", [
    ("0.3-0.4:1", "at least two distinct bands"),
    ("0.3-0.4:1,0.3-0.4:2", "at least two distinct bands"),
    ("0.3-0.4:0,0.5-1.0:1", "positive"),
    ("0.3-0.4:-1,0.5-1.0:1", "positive"),
    ("0.3-0.4:nan,0.5-1.0:1", "positive"),
    ("0.3-0.4:x,0.5-1.0:1", "not a number"),
    ("0.3-0.4,0.5-1.0:1", "LO-HI:WEIGHT"),
    ("0.4-0.3:1,0.5-1.0:1", "0 <= LO < HI <= 1"),
])
def test_bad_mixtures_are_refused(text, words):
    with pytest.raises(ConfigError, match=words):
        Mix.parse(text)


@pytest.mark.parametrize("args, words", [
    (["--conv-channels", "0"], "conv-channels must be a positive integer"),
    (["--hidden", "0"], "hidden must be a positive integer"),
    (["--conv-channels", "65"], "conv-channels must be <= 64"),
    (["--hidden", "257"], "hidden must be <= 256"),
    (["--hidden", "1.5"], "invalid int value"),
    (["--mix", "0.3-0.4:1"], "at least two distinct bands"),
    (["--mix", MIX, "--mix", "0.3-0.4:1,0.5-1:3"], "--mix value is repeated"),
])
def test_bad_flags_one_line_exit_2(tmp_path, capsys, args, words):
    out = tmp_path / "never"
    try:
        rc = build_main([*args, "--rows", "4", "--out", str(out), *SMALL])
    except SystemExit as e:  # argparse's own refusals (Parser.error)
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_mix_alone_builds_no_default_band():
    cfg = _config(["--mix", MIX, "--rows", "4", "--out", "x"])
    assert cfg.bands == () and [config_name(b, cfg.nca) for _, b in cfg.partitions] == [MIX_NAME]
    assert "mixes" not in _config(["--rows", "4", "--out", "x"]).identity()


# proportions and keys ----------------------------------------------------------------------------
@pytest.mark.parametrize("rows, weights, want", [
    (10, (1, 1), [5, 5]), (7, (1, 1), [4, 3]), (10, (1, 3), [3, 7]), (5, (1, 1, 1), [2, 2, 1]),
    (1, (1, 1), [1, 0]), (1, (1, 2), [0, 1]), (6, (0.5, 1), [2, 4]), (100, (0.1, 0.2, 0.7), [10, 20, 70]),
])
def test_mix_counts_are_the_largest_remainder_rounding(rows, weights, want):
    assert mix_counts(rows, weights) == want


def test_mix_order_gives_each_component_its_count_spread_evenly():
    order = mix_order([3, 7])
    assert collections.Counter(order.tolist()) == {0: 3, 1: 7}
    assert order.tolist() == [1, 0, 1, 1, 0, 1, 1, 1, 0, 1]
    assert mix_order([2, 0, 1]).tolist() == [0, 2, 0]


def test_mixture_keys_never_collide_with_band_keys():
    cfg = BuildConfig(out="x", bands=(Band(0.3, 0.4), Band(0.5, 1.0)), mixes=(Mix.parse(MIX),),
                      rows=9, shard_rows=4, val_rows=4)
    keys = [k for t in plan(cfg) for _, k, _ in t.components()]
    assert len(keys) == len(set(keys))
    assert shard_key(0, 10, Mix.parse(MIX), "train", 0) != shard_key(
        0, 10, Mix.parse("0.3-0.4:1,0.5-1.0:1"), "train", 0)


# builds --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("mix") / "ds"
    argv = ["--mix", MIX, "--band", "0.5-1.0", "--rows", "10", "--shard-rows", "4",
            "--val-rows", "3", "--seed", "2", "--out", str(out), *SMALL]
    assert build_main(argv) == 0
    return out, argv


def test_mixture_rows_split_into_their_bands_in_the_stated_proportions(mixed):
    out, _ = mixed
    manifest = json.loads((out / "ncagen.json").read_text())
    cfg = NCAConfig(seq_len=380)
    bands = {"band_30_40": Band(0.3, 0.4), "band_50_100": Band(0.5, 1.0)}
    for split, total in (("train", 10), ("validation", 3)):
        shards = sorted(p for p in manifest["shards"] if p.startswith(f"data/{MIX_NAME}/{split}-"))
        seen = 0
        for path in shards:
            rows = pq.read_table(out / path).to_pydict()
            counts = mix_counts(len(rows["band"]), (1, 3))
            want = [["band_30_40", "band_50_100"][k] for k in mix_order(counts)]
            assert rows["band"] == want  # exact proportions, in the stated order
            for ids, name, ratio in zip(rows["input_ids"], rows["band"], rows["gzip_ratio"]):
                recomputed = gzip_ratio_of_row(np.asarray(ids, np.int32), cfg)
                assert recomputed == np.float32(ratio) and bands[name].contains(recomputed)
            seen += len(rows["band"])
        assert seen == total
    part = manifest["partitions"][MIX_NAME]
    assert [c["config"] for c in part["mix"]] == ["band_30_40", "band_50_100"]
    # train shards of 4, 4 and 2 rows, validation 3: [1, 3] + [1, 3] + [1, 1] (a tie: the
    # earlier band) + [1, 2]
    assert [c["rows"] for c in part["mix"]] == [4, 9]
    assert manifest["config"]["mixes"] == ["0.3-0.4:1,0.5-1:3"]
    card = (out / "README.md").read_text()
    assert f"### `{MIX_NAME}`" in card and "`band_30_40` | 0.3-0.4 | 1 |" in card
    preview = pq.read_table(next((out / "preview").glob("*.parquet")), columns=["band"])
    assert set(preview.column("band").to_pylist()) == {"band_30_40", "band_50_100"}


def test_mixture_rows_regenerate_from_their_seeds(mixed):
    out, _ = mixed
    rows = _rows(out, MIX_NAME)
    again = regenerate(NCAConfig(seq_len=380), rows["rule_seed"], rows["sim"])
    assert np.array_equal(np.asarray(rows["input_ids"], np.int32), again["input_ids"])


def test_the_mixture_stream_is_the_mixture_build(mixed):
    from ncagen.stream import nca_generator, read_build

    out, _ = mixed
    for split in ("train", "validation"):
        rows = _rows(out, MIX_NAME, split)
        spec = read_build(str(out), MIX_NAME)
        n = spec["rows"][split]
        shards = range(-(-n // spec["split_shard_rows"][split]))
        got = list(nca_generator(list(shards), spec["cfg"], str(spec["band"]), spec["seed"],
                                 rows=n, shard_rows=spec["split_shard_rows"][split], split=split))
        assert [r["band"] for r in got] == rows["band"]
        assert [r["rule_seed"] for r in got] == rows["rule_seed"]
        assert all(np.array_equal(r["input_ids"], np.asarray(i, np.int32))
                   for r, i in zip(got, rows["input_ids"]))


def test_torch_stream_of_a_mixture(mixed):
    pytest.importorskip("torch")
    from ncagen.stream import NCAStream

    out, _ = mixed
    rows = _rows(out, MIX_NAME)
    got = list(NCAStream.from_build(str(out), MIX_NAME))
    assert [r["rule_seed"] for r in got] == rows["rule_seed"]
    assert [r["band"] for r in got] == rows["band"]


def test_rerun_changes_nothing_and_the_band_beside_it_is_a_plain_build(mixed, tmp_path):
    out, argv = mixed
    before = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*.parquet")}
    assert build_main(argv) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*.parquet")}
    plain = tmp_path / "plain"
    assert build_main(["--band", "0.5-1.0", "--rows", "10", "--shard-rows", "4", "--val-rows", "3",
                       "--seed", "2", "--out", str(plain), *SMALL]) == 0
    for split in ("train", "validation"):
        assert _rows(out, "band_50_100", split) == _rows(plain, "band_50_100", split)


def test_other_network_widths_build_and_regenerate(tmp_path):
    out = tmp_path / "wide"
    assert build_main(["--conv-channels", "8", "--hidden", "32", "--band", "0.5-1.0",
                       "--mix", "0.4-0.5:1,0.5-1.0:1", "--rows", "4", "--out", str(out),
                       *SMALL]) == 0
    manifest = json.loads((out / "ncagen.json").read_text())
    assert manifest["config"]["nca"]["conv_channels"] == 8
    assert manifest["config"]["nca"]["hidden"] == 32
    assert set(manifest["partitions"]) == {"band_50_100_c8_h32", "mix_40_50_50_100_c8_h32"}
    cfg = NCAConfig(seq_len=380, conv_channels=8, hidden=32)
    rows = _rows(out, "band_50_100_c8_h32")
    again = regenerate(cfg, rows["rule_seed"], rows["sim"])
    ids = np.asarray(rows["input_ids"], np.int32)
    assert np.array_equal(ids, again["input_ids"])
    assert np.array_equal(np.asarray(rows["gzip_ratio"], np.float32), again["gzip_ratio"])
    for row in ids:  # tokens decode to grids that encode back to them
        grids = decode_sequence(row, cfg)  # (T, G, G)
        assert grids.max() < cfg.states
        assert np.array_equal(encode_grids(grids[None], cfg.states, cfg.patch)[0],
                              from_sequence(row, cfg))
    assert set(_rows(out, "mix_40_50_50_100_c8_h32")["band"]) <= {"band_40_50_c8_h32",
                                                                  "band_50_100_c8_h32"}
    default = regenerate(NCAConfig(seq_len=380), rows["rule_seed"], rows["sim"])
    assert not np.array_equal(ids, default["input_ids"])  # the width changes the rule
    card = (out / "README.md").read_text()
    assert "| `conv_channels` | 8 |" in card and "| `hidden` | 32 |" in card


def test_recipe_with_mixes_and_widths():
    raw = {"version": "t", "rows": 8, "nca": {"seq_len": 380, "hidden": 8},
           "alphabets": [{"states": 10, "bands": ["0.5-1.0"], "mixes": [MIX]},
                         {"states": 15, "mixes": ["0.4-0.5:1,0.5-1.0:1"]}]}
    cfg = BuildConfig(out="x", **recipe_config(raw))
    names = sorted({t.config_name for t in plan(cfg)})
    assert names == ["band_50_100_c4_h8", "mix_30_40x1_50_100x3_c4_h8",
                     "mix_40_50_50_100_states_15_c4_h8"]
    from ncagen.plan import recorded_partitions

    assert recorded_partitions(cfg.identity()) == list(cfg.partitions)
