"""Settings: TGI's names, aliases, CLI flags on top, and cross-checks that name both settings."""

import pytest

from tgi_course.config import ConfigError, ServerConfig


def test_env_names_and_alias():
    config = ServerConfig.from_sources(env={"MAX_INPUT_LENGTH": "100", "MAX_TOTAL_TOKENS": "200", "MESSAGES_API_ENABLED": "true", "CORS_ALLOW_ORIGIN": "http://a,http://b"})
    assert config.max_input_tokens == 100 and config.max_total_tokens == 200
    assert config.messages_api_enabled is True and config.cors_allow_origin == ("http://a", "http://b")
    assert ServerConfig.from_sources(env={"MAX_INPUT_TOKENS": "5", "MAX_INPUT_LENGTH": "9"}).max_input_tokens == 5


def test_flags_override_env():
    config = ServerConfig.from_sources(env={"PORT": "8080"}, overrides={"port": "9090"})
    assert config.port == 9090
    assert ServerConfig.from_sources(env={}).port == 3000  # TGI launcher's default


@pytest.mark.parametrize(
    "settings,words",
    [
        ({"max_input_tokens": 100, "max_total_tokens": 100}, ["MAX_INPUT_TOKENS (100)", "MAX_TOTAL_TOKENS (100)"]),
        ({"max_input_tokens": 100, "max_total_tokens": 200, "max_batch_prefill_tokens": 50}, ["MAX_BATCH_PREFILL_TOKENS (50)", "MAX_INPUT_TOKENS (100)"]),
        ({"max_total_tokens": 200, "max_batch_total_tokens": 100}, ["MAX_BATCH_TOTAL_TOKENS (100)", "MAX_TOTAL_TOKENS (200)"]),
        ({"max_total_tokens": 99999}, ["MAX_TOTAL_TOKENS (99999)", "max_position_embeddings"]),
    ],
)
def test_inconsistent_limits_name_both(settings, words):
    with pytest.raises(ConfigError) as caught:
        ServerConfig(**settings).resolve_limits(8192)
    for word in words:
        assert word in str(caught.value)


def test_bad_value_names_the_variable():
    with pytest.raises(ConfigError, match="PORT"):
        ServerConfig.from_sources(env={"PORT": "eighty"})


def test_defaults_derive_from_the_model():
    config = ServerConfig().resolve_limits(8192)
    assert config.max_total_tokens == 4096 and config.max_input_tokens == 4095


def test_dtype_is_the_one_setting_a_run_shares_with_every_server_it_starts(monkeypatch):
    from tgi_course.config import run_dtype, run_wide_env
    from tgi_course.course.local_server import LocalServer
    from tgi_course.endpoints.process import build_env

    parent = {"DTYPE": "float32", "MAX_TOTAL_TOKENS": "64", "API_KEY": "secret", "PATH": "/usr/bin"}
    assert run_wide_env(parent) == {"DTYPE": "float32"} and run_dtype(parent) == "float32"
    assert run_dtype({}) == "auto"
    monkeypatch.setenv("DTYPE", "float32")
    monkeypatch.setenv("MAX_TOTAL_TOKENS", "64")
    server = LocalServer()
    assert server.config.dtype == "float32" and server.config.max_total_tokens is None
    assert LocalServer(dtype="bfloat16").config.dtype == "bfloat16"  # an explicit setting wins
    child = build_env(parent, {}, endpoint="ns/name", model_id="m", host="127.0.0.1", port=1)
    assert child["DTYPE"] == "float32" and "MAX_TOTAL_TOKENS" not in child and "API_KEY" not in child
    assert build_env(parent, {"DTYPE": "bfloat16"}, endpoint="ns/name", model_id="m", host="127.0.0.1", port=1)["DTYPE"] == "bfloat16"


def test_hostname_is_honoured_only_as_an_address():
    # Docker, Codespaces and Fedora shells export HOSTNAME as the machine's name: that must not move the bind address.
    assert ServerConfig.from_sources(env={"HOSTNAME": "3f2a9c1d7b4e"}).hostname == "127.0.0.1"
    assert ServerConfig.from_sources(env={"HOSTNAME": "0.0.0.0"}).hostname == "0.0.0.0"
    assert ServerConfig.from_sources(env={"HOSTNAME": "::1"}).hostname == "::1"
    assert ServerConfig.from_sources(env={"TGI_COURSE_HOSTNAME": "0.0.0.0", "HOSTNAME": "devbox"}).hostname == "0.0.0.0"
    assert ServerConfig.from_sources(env={"HOSTNAME": "devbox"}, overrides={"hostname": "0.0.0.0"}).hostname == "0.0.0.0"


def test_loopback_addresses():
    from tgi_course.config import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.7"))
