"""Model presets and config validation."""

from __future__ import annotations

import json

import pytest

from concurrency.errors import ConfigError, UnknownNameError
from concurrency.graph.config import PRESETS, ModelConfig, get_config

EXPECTED = {
    "qwen3.5-0.8b",
    "qwen3.5-2b",
    "qwen3.5-4b",
    "qwen3.5-9b",
    "qwen3.5-27b",
    "qwen3.5-35b-a3b",
    "qwen3.5-122b-a10b",
    "qwen3.5-397b-a17b",
    "qwen3-next-80b-a3b",
    "tiny",
}


def test_every_size_has_a_preset_with_a_source() -> None:
    assert set(PRESETS) == EXPECTED
    for cfg in PRESETS.values():
        assert cfg.source
        assert cfg.verified or cfg.unverified_fields, cfg.name


def test_27b_dimensions_match_the_reference() -> None:
    cfg = get_config("Qwen3.5-27B")
    assert (cfg.conv_dim, cfg.value_dim, cfg.ssm_dt_rank) == (10240, 6144, 48)
    assert cfg.n_embd_s * 4 == 3 * 1024 * 1024  # 3 MiB of f32 state per sequence
    assert [cfg.is_recurrent(i) for i in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ssm_dt_rank": 40}, "multiple of key heads"),
        ({"n_embd": 0}, "n_embd must be a positive integer"),
        ({"n_head": 24, "n_head_kv": 5}, "multiple of n_head_kv"),
        ({"ssm_d_conv": 1}, "at least 2"),
    ],
)
def test_impossible_configs_raise_one_clear_error(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PRESETS["qwen3.5-27b"].replace(**change)


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(UnknownNameError, match=r"qwen3\.5-27b"):
        get_config("qwen9")


def test_user_config_round_trips_through_json() -> None:
    cfg = PRESETS["tiny"].replace(name="mine", n_embd=128)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_user_config_with_unknown_key_is_rejected() -> None:
    data = PRESETS["tiny"].to_dict() | {"n_heads": 4}
    with pytest.raises(ConfigError, match="unknown config keys"):
        ModelConfig.from_dict(data)


def test_config_file_is_loaded_and_corrupt_files_are_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "mine.json"
    good.write_text(json.dumps(PRESETS["tiny"].replace(name="mine").to_dict()))
    assert get_config(str(good)).name == "mine"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        get_config(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        get_config(str(tmp_path / "missing.json"))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(PRESETS["tiny"].to_dict() | {"ssm_dt_rank": 5}))
    with pytest.raises(ConfigError, match="multiple of key heads"):
        get_config(str(wrong))
