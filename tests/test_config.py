"""Config validation: every refused configuration names its problem."""

import pytest

from ncagen.config import Band, ConfigError, NCAConfig


def test_defaults_match_spec():
    cfg = NCAConfig()
    assert cfg.vocab_size == 10_002
    assert (cfg.grid_start, cfg.grid_end) == (10_000, 10_001)
    assert cfg.tokens_per_grid == 38
    assert cfg.grids_per_sequence == 27  # 27 * 38 = 1026: the last grid is cut by 2 tokens


@pytest.mark.parametrize("kwargs, words", [
    ({"states": 1}, "states"),
    ({"patch": 5}, "does not divide"),
    ({"states": 10, "patch": 4}, "int32"),
    ({"seq_len": 20}, "too short"),
    ({"seq_len": 100}, "gzip ratio"),
    ({"temperature": 0.0}, "temperature"),
    ({"burn_in": -1}, "burn-in"),
    ({"sims_per_rule": 0}, "sims-per-rule"),
    ({"burn_in": 10**6}, "step 1000026 .* beyond the 1,000,000"),
    ({"seq_len": 10**8}, "beyond the 1,000,000"),
])
def test_refused_configs(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        NCAConfig(**kwargs)


def test_the_longest_rollout_allowed_is_the_limit():
    from ncagen.config import MAX_STEPS

    assert NCAConfig(burn_in=MAX_STEPS - 26).record_time(26) == MAX_STEPS  # 27 grids a row
    assert NCAConfig(sims_per_rule=2**31 - 1).sims_per_rule == 2**31 - 1


@pytest.mark.parametrize("text, lo, hi", [("0.5-1.0", 0.5, 1.0), ("0-1", 0.0, 1.0), (".3-.4", 0.3, 0.4)])
def test_band_parse(text, lo, hi):
    assert Band.parse(text) == Band(lo, hi)


@pytest.mark.parametrize("text", ["0.5", "0.6-0.5", "0.5-1.5", "a-b", "0.4-0.4", "-0.1-0.2"])
def test_band_parse_refuses(text):
    with pytest.raises(ConfigError):
        Band.parse(text)


def test_band_names_follow_spec():
    assert Band(0.3, 0.4).name() == "band_30_40"
    assert Band(0.5, 1.0).name(10) == "band_50_100"
    assert Band(0.3, 0.4).name(15) == "band_30_40_states_15"
    assert Band(0.2, 0.3).name(2) == "band_20_30_states_2"


def test_band_is_strict():
    band = Band(0.3, 0.4)
    assert not band.contains(0.3) and not band.contains(0.4) and band.contains(0.35)
