"""The dataset card: Hub-valid YAML, numbers recomputed from the Parquet files, figures, CLI."""

import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ncagen.build import main as build_main
from ncagen.card import (
    CardError, band_text, main, ratio_quantiles, size_category, write_card, zipf_stats)
from ncagen.config import Band

CONFIGS = ("band_40_50", "band_50_100", "band_40_50_states_15", "band_50_100_states_15")
FIGURE_LIMIT = 200_000  # bytes
PREVIEW = "preview/train-00000-of-00001.parquet"
PREVIEW_IMAGE_LIMIT = 20_000  # bytes per row's picture


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two bands x two alphabets, train in two shards, validation; card with figures."""
    out = tmp_path_factory.mktemp("card") / "nca"
    rc = build_main(["--band", "0.4-0.5", "--band", "0.5-1.0", "--states", "10", "--states", "15",
                     "--rows", "150", "--shard-rows", "100", "--val-rows", "30", "--seq-len", "380",
                     "--batch", "256", "--executor", "local", "--out", str(out)])
    assert rc == 0
    path = write_card(str(out))
    assert path == str(out / "README.md")
    return out


def card_of(out):
    from huggingface_hub import DatasetCard

    return DatasetCard.load(out / "README.md")


def section(text, config):
    """The card's section about one config."""
    start = text.index(f"### `{config}`")
    end = text.find("\n### ", start + 1)
    return text[start:end if end > 0 else None]


def recomputed(out, config, split):
    """Rows, tokens, Arrow bytes, file bytes and gzip ratios of a split, straight from Parquet."""
    files = sorted((out / "data" / config).glob(f"{split}-*.parquet"))
    table = pq.read_table(files)
    tokens = sum(len(r) for r in table.column("input_ids").to_pylist())
    return {"rows": table.num_rows, "tokens": tokens, "num_bytes": table.nbytes,
            "download": sum(f.stat().st_size for f in files),
            "ratios": table.column("gzip_ratio").to_numpy()}


def test_yaml_parses_with_hub_classes(built):
    from huggingface_hub import DatasetCardData

    data = card_of(built).data
    assert isinstance(data, DatasetCardData)
    assert data.license == "mit"
    assert data.task_categories == ["text-generation"]
    assert {"synthetic", "cellular-automata", "pre-pre-training"} <= set(data.tags)
    assert data.size_categories == ["n<1K"]  # 4 configs x 180 rows
    assert [c["config_name"] for c in data.configs] == [*CONFIGS, "preview"]
    assert [c["config_name"] for c in data.configs if c.get("default")] == ["band_50_100"]
    assert [i["config_name"] for i in data.dataset_info] == [*CONFIGS, "preview"]
    for info in data.dataset_info[:-1]:
        assert info["features"][0] == {"name": "input_ids", "sequence": "int32"}
        assert {f["name"]: f.get("dtype") for f in info["features"][1:]} == {
            "gzip_ratio": "float32", "zstd_ratio": "float32", "states": "int32",
            "band": "string", "rule_seed": "int64", "sim": "int32"}
    # the YAML survives a round trip through the Hub's own class
    again = DatasetCardData(**data.to_dict()).to_dict()
    assert again["configs"] == data.to_dict()["configs"]


def test_data_files_exist_and_cover_the_build(built):
    globbed = set()
    for config in card_of(built).data.configs[:-1]:  # the preview's file is not under data/
        assert [d["split"] for d in config["data_files"]] == ["train", "validation"]
        for entry in config["data_files"]:
            assert entry["path"] == f"data/{config['config_name']}/{entry['split']}-*.parquet"
            found = set(built.glob(entry["path"]))
            assert found
            assert not found & globbed
            globbed |= found
    assert globbed == set(built.glob("data/*/*.parquet"))
    assert len(list(built.glob("data/band_50_100/train-*.parquet"))) == 2


def test_numbers_equal_the_parquet_files(built):
    data, text = card_of(built).data, (built / "README.md").read_text()
    manifest = json.loads((built / "ncagen.json").read_text())
    total_rows = total_tokens = 0
    for info in data.dataset_info[:-1]:
        config = info["config_name"]
        sec = section(text, config)
        ratios, download = [], 0
        for split in info["splits"]:
            got = recomputed(built, config, split["name"])
            assert split["num_examples"] == got["rows"]
            assert split["num_bytes"] == got["num_bytes"]
            assert f"| {split['name']} | {got['rows']:,} | {got['tokens']:,} |" in sec
            total_rows += got["rows"]
            total_tokens += got["tokens"]
            ratios.append(got["ratios"])
            download += got["download"]
        assert info["download_size"] == download
        assert info["dataset_size"] == sum(s["num_bytes"] for s in info["splits"])
        ratios = np.concatenate(ratios).astype(np.float64)
        q = np.quantile(ratios, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
        row = [ratios.min(), *q, ratios.max(), ratios.mean()]
        assert "| " + " | ".join(f"{v:.4f}" for v in row) + " |" in sec
        part = manifest["partitions"][config]
        assert f"{part['accepted'] / part['candidates']:.1%} of the candidate" in sec
        ids = (pq.read_table(sorted((built / "data" / config).glob("*.parquet")))
               .column("input_ids").combine_chunks().flatten().to_numpy())
        n = part["states"]
        used = len(np.unique(ids[ids < n ** 4]))
        assert f"; {used:,} of the {n ** 4:,} patch tokens occur" in sec
    assert f"{total_rows:,} rows and {total_tokens:,} tokens" in text
    assert manifest["command"] in text


def test_parameters_and_command_from_the_manifest(built):
    text = (built / "README.md").read_text()
    manifest = json.loads((built / "ncagen.json").read_text())
    for key, value in manifest["config"]["nca"].items():
        shown = f"{value:g}" if isinstance(value, float) else f"{value:,}"
        assert f"| `{key}` | {shown} |" in text
    assert "| `bands` | 0.4-0.5, 0.5-1.0 |" in text
    assert "| `states` | 10, 15 |" in text
    assert f"```bash\n{manifest['command']}\n```" in text
    assert 'load_dataset("<org>/nca-trajectories", "band_40_50_states_15")' in text
    assert "arXiv:2603.10055" in text and "Lee, Dan and Han, Seungwook" in text


def test_figures_are_linked_small_pngs(built):
    text = (built / "README.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 3 * len(CONFIGS) + 1  # and every config side by side
    assert sorted(links) == sorted(p.relative_to(built).as_posix() for p in built.glob("figures/*"))
    for link in links:
        path = built / link
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size < FIGURE_LIMIT
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) >= 100
    with Image.open(built / "figures/band_50_100_samples.png") as im:
        # 3 rows of 10 grids, 12x12 cells of 5 px, 2 px between grids and 6 px between rows
        assert im.size == (10 * 60 + 9 * 2, 3 * 60 + 2 * 6)


def test_preview_config(built):
    """The preview config: the first 24 train rows of each config with a picture, declared in
    the YAML (not the default), published with the rest, left out of the manifest's checks."""
    from ncagen.publish import load_build

    data = card_of(built).data
    config = next(c for c in data.configs if c["config_name"] == "preview")
    assert config == {"config_name": "preview",
                      "data_files": [{"split": "train", "path": "preview/train-*.parquet"}]}
    info = data.dataset_info[-1]
    assert info["features"] == [
        {"name": "image", "dtype": "image"}, {"name": "band", "dtype": "string"},
        {"name": "gzip_ratio", "dtype": "float32"}, {"name": "rule_seed", "dtype": "int64"},
        {"name": "sim", "dtype": "int32"}, {"name": "states", "dtype": "int32"}]
    table = pq.read_table(built / PREVIEW)
    assert info["splits"] == [{"name": "train", "num_bytes": table.nbytes,
                               "num_examples": 24 * len(CONFIGS)}]
    assert info["download_size"] == (built / PREVIEW).stat().st_size
    rows = table.to_pylist()
    for k, config in enumerate(CONFIGS):
        mine = rows[24 * k:24 * (k + 1)]
        first = pq.read_table(built / f"data/{config}/train-00000-of-00002.parquet").slice(0, 24)
        assert [r["band"] for r in mine] == [config] * 24
        assert [r["rule_seed"] for r in mine] == first.column("rule_seed").to_pylist()
        assert [r["sim"] for r in mine] == first.column("sim").to_pylist()
        assert [r["gzip_ratio"] for r in mine] == first.column("gzip_ratio").to_pylist()
        assert {r["states"] for r in mine} == {15 if config.endswith("_15") else 10}
        for r in mine:
            assert r["image"]["path"] is None and len(r["image"]["bytes"]) < PREVIEW_IMAGE_LIMIT
        with Image.open(io.BytesIO(mine[0]["image"]["bytes"])) as im:
            assert im.format == "PNG" and im.size == (10 * 60 + 9 * 2, 60)
    assert json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]["image"] == {
        "_type": "Image"}
    assert PREVIEW not in json.loads((built / "ncagen.json").read_text())["shards"]
    assert PREVIEW in [f.path for f in load_build(str(built)).files]


def test_which_config_section(built):
    """The section on choosing a config: the paper's findings, the acceptance of every config
    by alphabet and band, and one figure with every config."""
    text = (built / "README.md").read_text()
    manifest = json.loads((built / "ncagen.json").read_text())
    start = text.index("### Which config should I use")
    sec = text[start:text.index("### Direct Use", start)]
    assert "0.3-0.4" in sec and "code" in sec and "164M tokens" in sec and "1.6x" in sec
    assert "| alphabet | 0.4-0.5 | 0.5-1.0 |" in sec
    for n in (10, 15):
        suffix = "" if n == 10 else f"_states_{n}"
        rates = [manifest["partitions"][f"{b}{suffix}"] for b in ("band_40_50", "band_50_100")]
        cells = " | ".join(f"{r['accepted'] / r['candidates']:.1%}" for r in rates)
        assert f"| n = {n} | {cells} |" in sec
    assert "![the first train row of every config](figures/bands.png)" in sec
    with Image.open(built / "figures/bands.png") as im:
        assert im.format == "PNG" and im.size[0] == 640 and im.size[1] > 60 * len(CONFIGS)


def test_rewriting_gives_identical_files(built):
    before = {p: p.read_bytes()
              for p in [built / "README.md", built / PREVIEW, *built.glob("figures/*.png")]}
    write_card(str(built))
    assert {p: p.read_bytes() for p in before} == before


def test_without_figures(built, tmp_path):
    copy = tmp_path / "nca"
    shutil.copytree(built, copy, ignore=shutil.ignore_patterns("figures", "README.md"))
    write_card(str(copy), figures=False)
    text = (copy / "README.md").read_text()
    assert "![" not in text and not (copy / "figures").exists()
    infos = [card_of(d).data.to_dict()["dataset_info"] for d in (copy, built)]
    assert infos[0] == infos[1]


def test_credentials_in_a_hand_edited_command_stay_out_of_the_card(built, tmp_path):
    # a build records its command redacted; one edited by hand afterwards is redacted again
    copy = tmp_path / "nca"
    shutil.copytree(built, copy, ignore=shutil.ignore_patterns("figures", "README.md"))
    manifest = json.loads((copy / "ncagen.json").read_text())
    manifest["command"] = ("ncagen build --out s3://AKIAHAND:HandSecret@bkt/x "
                           "--out s3://bkt/y?secret_key=QuerySecret")
    (copy / "ncagen.json").write_text(json.dumps(manifest))
    write_card(str(copy), figures=False)
    text = (copy / "README.md").read_text()
    assert "s3://***@bkt/x" in text and "secret_key=***" in text
    assert "HandSecret" not in text and "AKIAHAND" not in text and "QuerySecret" not in text


def _tampered(built, tmp_path, edit):
    copy = tmp_path / "nca"
    shutil.copytree(built, copy)
    manifest = json.loads((copy / "ncagen.json").read_text())
    edit(manifest, copy)
    (copy / "ncagen.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("edit, message", [
    (lambda m, d: m["partitions"]["band_40_50"]["splits"]["train"].update(rows=151),
     "the manifest says 151 rows"),
    (lambda m, d: m["partitions"]["band_50_100"].update(accepted=1), "candidate counts"),
    (lambda m, d: shutil.copy(d / "data/band_40_50/validation-00000-of-00001.parquet",
                              d / "data/band_40_50/validation-00001-of-00001.parquet"),
     "do not match its manifest"),
    (lambda m, d: m.update(complete=False), "not complete"),
])
def test_inconsistent_build_is_refused(built, tmp_path, edit, message):
    copy = _tampered(built, tmp_path, edit)
    with pytest.raises(CardError, match=message):
        write_card(str(copy))


def _without(*keys):
    """An edit that deletes a (nested) key of the manifest."""
    def edit(manifest, _):
        *parents, last = keys
        for key in parents:
            manifest = manifest[key]
        del manifest[last]
    return edit


@pytest.mark.parametrize("edit, message", [
    (None, "must hold a JSON object, not a list"),
    (_without("config"), "is malformed: it has no config"),
    (_without("config", "nca"), "is malformed: it has no config.nca"),
    (_without("shards"), "is malformed: it has no shards"),
    (_without("partitions", "band_50_100", "splits"),
     "is malformed: it has no partitions['band_50_100'].splits"),
    (_without("partitions", "band_40_50", "splits", "train", "tokens"),
     "it has no partitions['band_40_50'].splits.train.tokens"),
    (lambda m, d: m["partitions"]["band_40_50"].update(states="10"),
     "partitions['band_40_50'].states must be an integer, not a string"),
    (lambda m, d: m["config"]["nca"].update(colour="red"),
     "partitions['band_40_50']: NCAConfig.__init__() got an unexpected keyword argument"),
    (lambda m, d: m["partitions"].update(band_40_50=[]),
     "partitions['band_40_50'] must be an object, not a list"),
])
def test_malformed_manifest_is_one_line_with_status_2(built, tmp_path, capsys, edit, message):
    if edit is None:
        copy = tmp_path / "nca"
        shutil.copytree(built, copy)
        (copy / "ncagen.json").write_text("[]")
    else:
        copy = _tampered(built, tmp_path, edit)
    card = (copy / "README.md").read_bytes()

    assert main([str(copy)]) == 2

    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ")
    assert f"{copy / 'ncagen.json'}" in err and message in err
    assert (copy / "README.md").read_bytes() == card  # nothing written


def test_bad_repo_id_is_refused_before_writing(built, tmp_path, capsys):
    copy = tmp_path / "nca"
    shutil.copytree(built, copy)
    card = (copy / "README.md").read_bytes()

    assert main([str(copy), "--repo", "bad repo/!!"]) == 2

    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "bad repo id 'bad repo/!!'" in err
    assert (copy / "README.md").read_bytes() == card


def test_truncated_shard_is_named(built, tmp_path, capsys):
    copy = tmp_path / "nca"
    shutil.copytree(built, copy)
    shard = "data/band_50_100/train-00001-of-00002.parquet"
    content = (copy / shard).read_bytes()
    (copy / shard).write_bytes(content[: len(content) // 2])

    assert main([str(copy)]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{shard} is not a readable Parquet file" in err


def test_environment_failure_is_status_1(built, tmp_path, capsys, monkeypatch):
    copy = tmp_path / "nca"
    shutil.copytree(built, copy)

    def denied(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", dst)

    monkeypatch.setattr(os, "replace", denied)  # every write of the card renames into place
    assert main([str(copy), "--no-figures"]) == 1
    monkeypatch.undo()

    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "permission denied writing" in err and str(copy) in err


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ncagen.card", *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_cli(built, tmp_path, capsys):
    run = run_cli
    res = run(str(built), "--repo", "someone/nca")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(built / "README.md")
    assert 'load_dataset("someone/nca", "band_50_100")' in (built / "README.md").read_text()
    write_card(str(built))  # back to the default repo id for the other tests

    missing = run(str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error:") and missing.stderr.count("\n") == 1
    assert "is not a directory" in missing.stderr

    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "ncagen.json" in err

    bad = run(str(built), "--bogus")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_pure_helpers():
    assert size_category(999) == "n<1K" and size_category(1000) == "1K<n<10K"
    assert size_category(250_000) == "100K<n<1M" and size_category(10**11) == "n>10B"
    assert band_text(Band(0.5, 1.0)) == "0.5-1.0" and band_text(Band(0.35, 0.45)) == "0.35-0.45"
    assert band_text(Band(0.0, 0.2)) == "0.0-0.2"
    counts = np.zeros(5000, np.int64)
    counts[:2000] = np.round(1e7 / np.arange(1, 2001))  # Zipf's law, exponent 1
    z = zipf_stats(counts[::-1].copy())
    assert z["used"] == 2000 and z["top_token"] == 4999
    assert z["slope"] == pytest.approx(-1.0, abs=0.01)
    assert z["top_share"] == pytest.approx(1 / sum(1 / np.arange(1, 2001)), rel=1e-3)
    q = ratio_quantiles(np.array([0.1, 0.2, 0.3, 0.4, 0.5], np.float32))
    assert q["50%"] == pytest.approx(0.3) and q["min"] == pytest.approx(0.1)
    assert list(q) == ["min", "1%", "5%", "25%", "50%", "75%", "95%", "99%", "max", "mean"]


def test_canonical_card_in_the_repo(repo_root):
    """dataset_cards/nca-trajectories/README.md parses and links figures that are there."""
    from huggingface_hub import DatasetCard

    folder = repo_root / "dataset_cards" / "nca-trajectories"
    card = DatasetCard.load(folder / "README.md")
    names = [c["config_name"] for c in card.data.configs]
    assert {"band_20_30", "band_30_40", "band_40_50", "band_50_100",
            "band_30_40_states_15", "band_50_100_states_15"} <= set(names)
    assert [c["config_name"] for c in card.data.configs if c.get("default")] == ["band_50_100"]
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card.text):
        path = folder / link
        assert path.is_file() and path.stat().st_size < FIGURE_LIMIT
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _card_files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in [out / "README.md", out / PREVIEW, *sorted((out / "figures").glob("*.png"))]}


def test_quick_card_equals_full_scan(built, tmp_path):
    """The build's card (token counts from the footers, one row group of each size read) is
    byte for byte the card of a full re-read, here and on shards of several row groups; a
    footer whose counts do not add up to its rows is caught."""
    write_card(str(built))
    full = _card_files(built)
    write_card(str(built), quick=True)
    assert _card_files(built) == full

    out = tmp_path / "groups"  # 8,200 rows: one row group of 8,192 and one of 8
    assert build_main(["--band", "0.5-1.0", "--rows", "8300", "--shard-rows", "8200",
                       "--seq-len", "380", "--executor", "local", "--out", str(out)]) == 0
    quick = _card_files(out)  # the build wrote it with quick=True
    write_card(str(out))
    assert _card_files(out) == quick
    assert [pq.ParquetFile(f).num_row_groups for f in sorted(out.glob("data/*/*.parquet"))] == [2, 1]

    from ncagen.shards import STATS_KEY, pack_counts, unpack_counts

    shard = sorted(out.glob("data/*/*.parquet"))[1]
    meta = json.loads(pq.ParquetFile(shard).metadata.metadata[STATS_KEY])
    counts = unpack_counts(meta["token_counts"], 10_002)
    counts[0] += 5  # a footer that does not add up to the shard's tokens
    table = pq.read_table(shard)
    with pq.ParquetWriter(shard, table.schema, compression="zstd") as w:
        w.write_table(table)
        w.add_key_value_metadata({STATS_KEY: json.dumps({**meta,
                                                         "token_counts": pack_counts(counts)})})
    with pytest.raises(CardError, match="do not add up"):
        write_card(str(out), quick=True)
