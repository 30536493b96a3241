"""Server settings: PROMPTEOL_* variables, precedence of explicit values, validation messages."""

from __future__ import annotations

import pytest
from conftest import require

require("fastapi")

from prompteol.errors import ConfigError  # noqa: E402
from prompteol.serve.settings import ServeSettings, env_name  # noqa: E402


def test_defaults():
    s = ServeSettings.from_env({})
    assert (s.model, s.host, s.port, s.api_key, s.normalize) == ("smollm2-135m", "127.0.0.1", 8000, None, True)
    assert s.model_name == "smollm2-135m"


def test_the_server_packs_by_default_and_can_pad():
    """packing is the one encoder default the server changes (measured under load); flags and variables undo it."""
    assert ServeSettings.from_env({}).encoder.packing is True
    assert ServeSettings(model="tiny-random-llama").encoder.packing is True  # top-level options
    assert ServeSettings().encoder.packing is True
    assert ServeSettings.from_env({"PROMPTEOL_PACKING": "false"}).encoder.packing is False
    assert ServeSettings.from_env({}, encoder_options_given={"packing": False}).encoder.packing is False


def test_env_variables_are_read_and_parsed():
    env = {
        "PROMPTEOL_MODEL": "tiny-random-llama",
        "PROMPTEOL_SERVED_MODEL_NAME": "emb",
        "PROMPTEOL_API_KEY": "k",
        "PROMPTEOL_MAX_BATCH_TOKENS": "1024",
        "PROMPTEOL_MAX_WAIT_MS": "2.5",
        "PROMPTEOL_NORMALIZE": "false",
        "PROMPTEOL_DEMONSTRATIONS": '["A man is smoking.|Smoking"]',
        "PROMPTEOL_LAYER": "-2",
        "PROMPTEOL_CACHE": "/tmp/somewhere",
        "PROMPTEOL_PORT": "",  # empty = unset
    }
    s = ServeSettings.from_env(env)
    assert s.model_name == "emb" and s.api_key.get_secret_value() == "k"
    assert (s.max_batch_tokens, s.max_wait_ms, s.normalize, s.port) == (1024, 2.5, False, 8000)
    assert s.cache_dir == "/tmp/somewhere" and s.encoder.layer == -2 and s.model == "tiny-random-llama"
    assert s.encoder_config().demonstrations[0].word == "Smoking"
    assert env_name("cache_dir") == "PROMPTEOL_CACHE" and env_name("max_inputs") == "PROMPTEOL_MAX_INPUTS"


def test_overrides_win_and_none_means_not_given():
    s = ServeSettings.from_env({"PROMPTEOL_PORT": "9000", "PROMPTEOL_HOST": "0.0.0.0"}, port=9100, host=None)
    assert (s.port, s.host) == (9100, "0.0.0.0")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"PROMPTEOL_PORT": "eighty"}, "PROMPTEOL_PORT"),
        ({"PROMPTEOL_MAX_INPUTS": "0"}, "--max-inputs"),
        ({"PROMPTEOL_POOLING": "max"}, "pooling"),
        ({"PROMPTEOL_DEMONSTRATIONS": "A man.|Man"}, "PROMPTEOL_DEMONSTRATIONS should be a JSON list"),
        ({"PROMPTEOL_LAYER": "top"}, "PROMPTEOL_LAYER"),
        ({"PROMPTEOL_TEMPLATE": "no slot"}, "template"),
    ],
)
def test_invalid_values_name_the_option(env, words):
    with pytest.raises(ConfigError, match=words):
        ServeSettings.from_env(env)


def test_api_key_never_shown():
    s = ServeSettings(api_key="sk-secret-value")
    assert "sk-secret-value" not in repr(s) and "sk-secret-value" not in str(s.model_dump())
    with pytest.raises(ConfigError) as info:
        ServeSettings.from_env({"PROMPTEOL_API_KEY": "sk-secret-value"}, port=-1)
    assert "sk-secret-value" not in str(info.value)


def test_unknown_fields_are_refused():
    with pytest.raises(ConfigError, match="max_batch"):
        ServeSettings.validated(max_batch=3)
