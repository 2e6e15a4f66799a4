"""Model presets and config validation."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from concurrency.errors import ConfigError, UnknownNameError
from concurrency.graph.config import (
    PRESETS,
    ModelConfig,
    config_keys_markdown,
    config_keys_text,
    get_config,
)
from concurrency.graph.config_file import load_config
from concurrency.graph.config_keys import CONFIG_KEYS, required_keys

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


# --- the key table -----------------------------------------------------------------------


def test_every_field_has_one_row_in_the_key_table_in_field_order() -> None:
    assert [k.name for k in CONFIG_KEYS] == [f.name for f in dataclasses.fields(ModelConfig)]


def test_required_keys_are_exactly_the_fields_without_a_default() -> None:
    """The table's "required for every arch" and the dataclass agree, so Python code and
    config files follow the same rule."""
    no_default = {
        f.name
        for f in dataclasses.fields(ModelConfig)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert set(required_keys()) == no_default
    assert {"n_vocab", "ssm_d_state", "head_dim", "ssm_n_group", "ssm_dt_rank"} <= no_default
    assert set(required_keys("qwen35")) == no_default | {"n_ff"}
    moe = {"n_expert", "n_expert_used", "n_ff_exp", "n_ff_shexp"}
    assert set(required_keys("qwen35moe")) == set(required_keys("qwen3next")) == no_default | moe


def test_help_text_docstring_and_markdown_name_every_key() -> None:
    text, markdown, doc = config_keys_text(), config_keys_markdown(), ModelConfig.__doc__ or ""
    for k in CONFIG_KEYS:
        assert re.search(rf"^  {k.name} ", text, re.M), k.name
        assert f"| `{k.name}` |" in markdown and f"  {k.name} " in doc
    assert len(markdown.splitlines()) == len(CONFIG_KEYS) + 2
    assert "ssm_d_state" in text and "<arch>.ssm.state_size" in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_qwen35_presets_spell_out_state_size_and_vocabulary() -> None:
    """seed-anatomy §3.5: every Qwen3.5 size has S = 128 and 248 320 tokens; Qwen3-Next keeps
    Qwen3's 151 936 (transformers' Qwen3NextConfig) instead of borrowing Qwen3.5's."""
    for cfg in PRESETS.values():
        if cfg.name.startswith("qwen3.5-"):
            assert (cfg.ssm_d_state, cfg.n_vocab) == (128, 248_320), cfg.name
    nxt = PRESETS["qwen3-next-80b-a3b"]
    assert nxt.n_vocab == 151_936 and "n_vocab" in nxt.unverified_fields


# --- config files --------------------------------------------------------------------------


def _dense() -> dict:
    return PRESETS["tiny"].replace(name="mine").to_dict()


def _moe() -> dict:
    return PRESETS["qwen3.5-35b-a3b"].replace(name="mine").to_dict()


def _write(path: Path, data: object) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
@pytest.mark.parametrize("preset", ["tiny", "qwen3.5-35b-a3b", "qwen3-next-80b-a3b"])
def test_configs_round_trip_through_json_and_yaml(tmp_path: Path, suffix: str, preset: str) -> None:
    cfg = PRESETS[preset].replace(name="mine")
    loaded = get_config(str(_write(tmp_path / f"mine{suffix}", cfg.to_dict())))
    assert loaded == cfg and loaded.unverified_fields == cfg.unverified_fields
    assert load_config(tmp_path / f"mine{suffix}") == cfg  # a Path works too


@pytest.mark.parametrize(
    ("base", "key"),
    [(_dense, k) for k in required_keys("qwen35") if k != "name"]
    + [(_moe, k) for k in required_keys("qwen35moe") if k not in required_keys()],
)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_missing_required_key_is_named(tmp_path: Path, base, key: str, suffix: str) -> None:  # type: ignore[no-untyped-def]
    data = base()
    del data[key]
    path = _write(tmp_path / f"mine{suffix}", data)
    with pytest.raises(ConfigError, match=rf"mine{suffix}: .*missing required keys.*: {key};"):
        get_config(str(path))


def test_every_missing_key_is_named_in_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "half.yaml", {"arch": "qwen35", "n_embd": 64, "n_layer": 4})
    with pytest.raises(ConfigError) as err:
        get_config(str(path))
    message = str(err.value)
    assert "\n" not in message and "half.yaml" in message
    missing = set(required_keys("qwen35")) - {"name", "arch", "n_embd", "n_layer"}
    assert set(re.search(r"qwen35\): ([^;]+);", message).group(1).split(", ")) == missing  # type: ignore[union-attr]


def test_keys_with_a_sensible_default_may_be_left_out(tmp_path: Path) -> None:
    data = _dense()
    for key in (
        "name",
        "ssm_d_conv",
        "full_attention_interval",
        "rope_fraction",
        "source",
        "verified",
        "unverified_fields",
        "n_expert",
        "n_expert_used",
        "n_ff_exp",
        "n_ff_shexp",
    ):
        del data[key]
    cfg = get_config(str(_write(tmp_path / "small.yml", data)))
    assert cfg.name == "small"  # the file name without its extension
    assert (cfg.ssm_d_conv, cfg.full_attention_interval, cfg.rope_fraction) == (4, 4, 0.25)
    assert (cfg.source, cfg.verified, cfg.n_expert) == ("user", False, 0)
    moe = _moe()
    del moe["n_ff"]
    assert get_config(str(_write(tmp_path / "moe.json", moe))).n_ff == 0


def _bad_files(tmp_path: Path) -> list[tuple[Path, str]]:
    """(path, expected message) for every way a config file can be wrong."""
    (tmp_path / "folder.json").mkdir()
    cases: list[tuple[str, bytes, str]] = [
        ("corrupt.json", b'{"arch": "qwen35",\n "n_embd": }', r"not valid JSON \(line 2, column"),
        ("corrupt.yaml", b"arch: qwen35\nn_embd: [64\n", r"not valid YAML \(line 3, column 1"),
        ("tabs.yml", b"arch: qwen35\n\tn_embd: 64\n", r"not valid YAML \(line 2"),
        ("list.json", b"[1, 2]", r"holds a list, not a mapping of config keys"),
        ("scalar.yaml", b"qwen3.5-27b\n", r"holds a str, not a mapping"),
        ("empty.yaml", b"", r"is empty"),
        ("blank.json", b"  \n", r"is empty"),
        ("binary.json", b"\xff\xfe{}", r"not UTF-8 text"),
        ("twice.json", b'{"n_embd": 1, "n_embd": 2}', r"gives the key n_embd twice"),
        ("twice.yaml", b"n_embd: 1\nn_embd: 2\n", r"line 2, column 1: the key 'n_embd' is given"),
        ("mine.toml", b"arch = 'qwen35'", r"extension '\.toml'; LACE reads \.json, \.yaml, \.yml"),
        ("noext", b"{}", r"extension '\(none\)'"),
        (
            "hf.json",
            b'{"hidden_size": 5, "n_heads": 3}',
            r"unknown config keys: 'hidden_size' \(LACE calls it n_embd\), 'n_heads' \(did you "
            r"mean n_head\?\)",
        ),
        (
            "all.json",
            json.dumps({n: c.to_dict() for n, c in PRESETS.items()}).encode(),
            r"holds several configs .* keep the mapping of one",
        ),
        (
            "arch.yaml",
            yaml.safe_dump({**_dense(), "arch": "llama"}).encode(),
            r"arch 'llama' is not one of qwen35, qwen35moe, qwen3next",
        ),
        (
            "str.json",
            json.dumps({**_dense(), "n_embd": "256"}).encode(),
            r"n_embd must be an integer, got '256'",
        ),
        (
            "float.yaml",
            yaml.safe_dump({**_dense(), "n_layer": 4.0}).encode(),
            r"n_layer must be an integer, got 4\.0",
        ),
        (
            "bool.json",
            json.dumps({**_dense(), "n_head": True}).encode(),
            r"n_head must be an integer, got True",
        ),
        (
            "rope.json",
            json.dumps({**_dense(), "rope_fraction": "1/4"}).encode(),
            r"rope_fraction must be a number, got '1/4'",
        ),
        (
            "verified.json",
            json.dumps({**_dense(), "verified": "yes"}).encode(),
            r"verified must be true or false",
        ),
        (
            "fields.json",
            json.dumps({**_dense(), "unverified_fields": "n_ff"}).encode(),
            r"unverified_fields must be a list of key names",
        ),
        (
            "negative.yaml",
            yaml.safe_dump({**_moe(), "n_ff_shexp": -1}).encode(),
            r"n_ff_shexp must be ≥ 0, got -1",
        ),
    ]
    out = [
        (tmp_path / "folder.json", r"is a directory; give a preset name"),
        (tmp_path / "missing.yaml", r"does not exist; give a preset name"),
    ]
    for name, content, message in cases:
        (tmp_path / name).write_bytes(content)
        out.append((tmp_path / name, message))
    return out


def test_every_bad_file_gives_one_line_naming_the_file(tmp_path: Path) -> None:
    for path, message in _bad_files(tmp_path):
        with pytest.raises(ConfigError, match=message) as err:
            get_config(path)
        text = str(err.value)
        assert str(path) in text and "\n" not in text, text


def test_an_unreadable_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "locked.json", _dense())

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ConfigError, match=r"cannot read config file .*locked\.json \(Permission"):
        get_config(str(path))


def test_get_config_tells_names_from_paths(tmp_path: Path) -> None:
    assert get_config(" Qwen3.5-27B ") is PRESETS["qwen3.5-27b"]
    with pytest.raises(UnknownNameError, match=r"or the path of a \.json or \.yaml file"):
        get_config("qwen3.5-27x")
    with pytest.raises(ConfigError, match=r"mine\.toml does not exist"):
        get_config("mine.toml")
    with pytest.raises(ConfigError, match="not int"):
        get_config(27)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="a mapping of keys to values, not list"):
        ModelConfig.from_dict([("arch", "qwen35")])  # type: ignore[arg-type]
