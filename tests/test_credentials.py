"""Endpoint credentials: where the key comes from, and URLs with every secret taken out."""

import pickle

import pytest

from pytest_axion.credentials import Secret, api_key, is_loopback, public_url
from pytest_axion.errors import SettingsError
from pytest_axion.machine.cpu import UsableCores
from pytest_axion.settings import resolve_settings

CORES = UsableCores(logical=2, physical=2, quota_cpus=None, machine_logical=2)


@pytest.mark.parametrize("url, shown", [
    ("https://user:s3cret@api.example.com/v1", "https://api.example.com/v1"),
    ("https://api.example.com:8443/v1?api_key=s3cret#frag", "https://api.example.com:8443/v1"),
    ("http://s3cret@[::1]:8080/v1", "http://[::1]:8080/v1"),
    ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
])
def test_public_url_drops_user_info_query_and_fragment(url, shown):
    assert public_url(url) == shown


def test_the_key_comes_from_the_url_then_axion_api_key_then_openai_api_key():
    env = {"AXION_API_KEY": "from-axion", "OPENAI_API_KEY": "from-openai"}
    assert api_key("https://u:from%2Furl@h/v1", env) == Secret("from/url", "the URL")
    assert api_key("https://only-user@h/v1", env).value == "only-user"
    assert api_key("https://h/v1", env) == Secret("from-axion", "AXION_API_KEY")
    assert api_key("https://h/v1", {"OPENAI_API_KEY": "from-openai", "AXION_API_KEY": ""}).source == "OPENAI_API_KEY"
    assert api_key("https://h/v1", {}) is None


def test_a_secret_never_shows_itself():
    secret = Secret("s3cret", "AXION_API_KEY")
    assert "s3cret" not in repr(secret) and "s3cret" not in str(secret) and "s3cret" not in f"{secret}"
    assert secret.bearer() == {"Authorization": "Bearer s3cret"}
    assert pickle.loads(pickle.dumps(secret)) == secret


def test_loopback_urls_are_known():
    assert is_loopback("http://127.0.0.1:8080/v1") and is_loopback("http://localhost/v1")
    assert is_loopback("http://[::1]:1/v1") and not is_loopback("https://api.example.com/v1")


def test_settings_keep_the_public_url_and_the_key_apart(monkeypatch):
    monkeypatch.delenv("AXION_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = resolve_settings({"enabled": True, "endpoint": "https://u:s3cret@api.example.com/v1?x=1",
                                 "ab_endpoint": "https://other.example.com/v1"}, {}, cores=CORES)
    assert settings.endpoint.value == "https://api.example.com/v1"
    assert settings.endpoint_key == Secret("s3cret", "the URL") and settings.ab_endpoint_key is None
    assert "s3cret" not in repr(settings)
    with pytest.raises(SettingsError) as err:
        resolve_settings({"enabled": True, "endpoint": "ftp://u:s3cret@h/v1"}, {}, cores=CORES)
    assert "s3cret" not in str(err.value)
