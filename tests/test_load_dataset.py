"""A built dataset with its card loads with the real `datasets.load_dataset`, offline."""

import re
import shutil

import pyarrow.parquet as pq
import pytest

from ncagen.build import main as build_main
from ncagen.card import write_card

CONFIGS = ("band_30_40", "band_50_100")
ROWS = {"train": 200, "validation": 40}
SEQ_LEN = 380


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """datasets and huggingface_hub offline, with caches in a temporary HF_HOME."""
    home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            mp.setenv(var, "1")
        mp.setenv("HF_HOME", str(home))
        mp.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
        import datasets

        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # in case it was imported earlier
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        yield home / "datasets"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two bands, train in two shards, validation, then the card."""
    out = tmp_path_factory.mktemp("load") / "nca"
    rc = build_main(["--band", "0.3-0.4", "--band", "0.5-1.0", "--rows", str(ROWS["train"]),
                     "--shard-rows", "120", "--val-rows", str(ROWS["validation"]),
                     "--seq-len", str(SEQ_LEN), "--batch", "256", "--executor", "local",
                     "--out", str(out)])
    assert rc == 0
    write_card(str(out), figures=False)
    return out


def expected_features():
    from datasets import Features, List, Value

    return Features({"input_ids": List(Value("int32")), "gzip_ratio": Value("float32"),
                     "zstd_ratio": Value("float32"), "states": Value("int32"),
                     "band": Value("string"), "rule_seed": Value("int64"), "sim": Value("int32")})


def parquet_rows(out, config, split):
    files = sorted((out / "data" / config).glob(f"{split}-*.parquet"))
    assert files
    return pq.read_table(files).to_pydict()


def declared_sizes(out, config):
    """num_examples and num_bytes per split, as the card declares them."""
    from huggingface_hub import DatasetCard

    info = next(i for i in DatasetCard.load(out / "README.md").data.dataset_info
                if i["config_name"] == config)
    return {s["name"]: (s["num_examples"], s["num_bytes"]) for s in info["splits"]}


@pytest.mark.parametrize("config", CONFIGS)
def test_load_each_config(built, offline, config):
    from datasets import load_dataset

    ds = load_dataset(str(built), config, cache_dir=str(offline))
    assert set(ds) == {"train", "validation"}
    declared = declared_sizes(built, config)
    for split, want_rows in ROWS.items():
        d = ds[split]
        assert d.features == expected_features()
        assert d.num_rows == want_rows
        recorded = d.info.splits[split]
        assert declared[split] == (recorded.num_examples, recorded.num_bytes)
        rows = parquet_rows(built, config, split)
        assert d["rule_seed"] == rows["rule_seed"]
        assert d["sim"] == rows["sim"]
        assert d["gzip_ratio"] == rows["gzip_ratio"]
        assert d[0]["input_ids"] == rows["input_ids"][0]
        assert d[-1]["input_ids"] == rows["input_ids"][-1]
        assert len(d[-1]["input_ids"]) == SEQ_LEN
        assert set(d["band"]) == {config}


def test_default_config_is_band_50_100(built, offline):
    from datasets import load_dataset

    ds = load_dataset(str(built), split="validation", cache_dir=str(offline))
    assert set(ds["band"]) == {"band_50_100"}
    assert ds.num_rows == ROWS["validation"]


@pytest.mark.parametrize("config", CONFIGS)
def test_streaming(built, offline, config):
    from datasets import load_dataset

    ds = load_dataset(str(built), config, streaming=True, cache_dir=str(offline))
    for split, want_rows in ROWS.items():
        stream = ds[split]
        assert stream.features == expected_features()
        seen = list(stream)
        rows = parquet_rows(built, config, split)
        assert len(seen) == want_rows
        assert [r["rule_seed"] for r in seen] == rows["rule_seed"]
        assert seen[0]["input_ids"] == rows["input_ids"][0]


def test_card_split_sizes_are_enforced(built, offline, tmp_path):
    """load_dataset checks the card's num_examples, so a wrong count would not go unnoticed."""
    from datasets import load_dataset
    from datasets.exceptions import NonMatchingSplitsSizesError

    copy = tmp_path / "nca"
    shutil.copytree(built, copy)
    card = (copy / "README.md").read_text()
    card, n = re.subn(r"num_examples: 40\b", "num_examples: 41", card)
    assert n == len(CONFIGS)
    (copy / "README.md").write_text(card)
    with pytest.raises(NonMatchingSplitsSizesError):
        load_dataset(str(copy), "band_30_40", cache_dir=str(tmp_path / "cache"))


def test_preview_config(built, offline):
    """load_dataset(DIR, "preview"): the first train rows of each config, each with its picture
    decoded to a PIL image; the default config stays band_50_100."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset
    from PIL import Image

    ds = load_dataset(str(built), "preview", split="train", cache_dir=str(offline))
    assert isinstance(ds.features["image"], ImageFeature)
    assert ds.num_rows == 24 * len(CONFIGS)
    assert ds["band"] == [c for c in CONFIGS for _ in range(24)]
    for k, config in enumerate(CONFIGS):
        first = parquet_rows(built, config, "train")
        rows = ds.select(range(24 * k, 24 * (k + 1)))
        assert rows["rule_seed"] == first["rule_seed"][:24]
        image = rows[0]["image"]
        assert isinstance(image, Image.Image) and image.size == (10 * 60 + 9 * 2, 60)
