from __future__ import annotations

from pathlib import Path

import pytest

from sincere.config import EMBEDDED_DEPLOYMENT, EMBEDDED_MODEL, load_settings
from sincere.errors import ConfigError
from sincere.runtime import build_cascade

EXAMPLE = """
[defaults]
max_retries = 2
timeout_s = 60
connect_timeout_s = 3
first_token_timeout_s = 10
stream_idle_timeout_s = 10

[[models]]
name = "gpt-4o-mini"
deployments = ["openai-mini"]
fallbacks = ["smollm2"]

[[deployments]]
name = "openai-mini"
provider = "openai"
base_url = "https://api.openai.com/v1"
model = "gpt-4o-mini"
api_key_env = "OPENAI_API_KEY"
input_price_per_mtok = 0.15
output_price_per_mtok = 0.60
context_window = 128000
supports_prefill = false
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sincere.toml"
    path.write_text(text)
    return path


def test_no_configuration_means_one_embedded_model(tmp_path: Path) -> None:
    settings = load_settings(None, env={"SINCERE_DATA_DIR": str(tmp_path)})
    assert [m.name for m in settings.models] == [EMBEDDED_MODEL]
    assert [d.name for d in settings.deployments] == [EMBEDDED_DEPLOYMENT]
    assert settings.data_dir == tmp_path
    assert settings.defaults.max_retries == 2


def test_the_documented_example_loads_and_keeps_the_embedded_fallback(tmp_path: Path) -> None:
    path = _write(tmp_path, EXAMPLE)
    settings = load_settings(None, env={"SINCERE_CONFIG": str(path)})
    assert settings.source == path
    model = settings.model("gpt-4o-mini")
    assert model is not None
    assert model.fallbacks == ("smollm2",)
    mini = settings.deployment("openai-mini")
    assert mini.api_key({"OPENAI_API_KEY": "k"}) == "k"
    assert mini.context_window == 128000
    assert settings.model("smollm2") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[defaults]\ntimeout_s = -1\n", "defaults.timeout_s: Input should be greater than 0"),
        ("[defaults]\ntimeout = 5\n", "defaults.timeout: Extra inputs are not permitted"),
        (
            '[[deployments]]\nname = "x"\nprovider = "openai"\nmodel = "m"\n',
            "deployments[0]: an openai deployment needs base_url",
        ),
        (
            '[[models]]\nname = "a"\ndeployments = ["nowhere"]\n',
            "models[0].deployments: no deployment named 'nowhere'",
        ),
        (
            '[[models]]\nname = "a"\ndeployments = ["embedded"]\nfallbacks = ["ghost"]\n',
            "models[0].fallbacks: no model named 'ghost'",
        ),
        ("[defaults\n", "not valid TOML"),
    ],
)
def test_a_bad_file_names_the_file_the_key_and_the_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_an_unknown_provider_kind_names_the_file_the_deployment_and_the_kinds(
    tmp_path: Path,
) -> None:
    # Kinds are the composition root's (tests add their own), so it is the one to refuse.
    path = _write(tmp_path, '[[deployments]]\nname = "x"\nprovider = "grpc"\n')
    settings = load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError) as info:
        build_cascade(settings, env={})
    assert str(path) in str(info.value)
    assert "deployment 'x': provider 'grpc' is not a kind sincere knows" in str(info.value)
    assert "embedded, openai" in str(info.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "absent.toml", env={})


@pytest.mark.parametrize(
    "url", ["http://user:s3cret-pass@127.0.0.1:9/v1", "https://sk-live-token@api.example/v1"]
)
def test_a_base_url_with_credentials_is_refused_without_repeating_them(
    tmp_path: Path, url: str
) -> None:
    path = _write(
        tmp_path,
        f'[[deployments]]\nname = "x"\nprovider = "openai"\nmodel = "m"\nbase_url = "{url}"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert f"{path}: deployments[0].base_url: " in message
    assert "api_key_env" in message  # what to do instead
    assert "s3cret" not in message
    assert "sk-live-token" not in message


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "ftp://host/v1", "http:///v1"])
def test_a_base_url_that_is_no_http_url_is_refused(tmp_path: Path, url: str) -> None:
    path = _write(
        tmp_path,
        f'[[deployments]]\nname = "x"\nprovider = "openai"\nmodel = "m"\nbase_url = "{url}"\n',
    )
    with pytest.raises(ConfigError, match=r"deployments\[0\]\.base_url: .*http"):
        load_settings(path, env={})
