"""Settings from CRUCIBLE_* variables: safe defaults, normalisation, errors that name the variable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backend.config import SECRET_KEY_FILE, ConfigError, load_settings

CRUCIBLE = Path(sys.executable).with_name("crucible")


def test_defaults_need_no_configuration(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.data_dir == Path("data")
    assert s.resolved_data_dir == tmp_path / "data"
    assert s.database_url is None
    assert s.sqlalchemy_url == f"sqlite:///{tmp_path / 'data' / 'crucible.db'}"
    assert s.is_sqlite
    assert s.base_url == "http://localhost:3000" and s.secure_cookies is False
    assert (s.log_level, s.log_format) == ("INFO", "json")
    assert s.session_ttl_hours == 168
    assert (s.login_max_attempts_per_ip, s.login_max_failures_per_account, s.login_window_seconds) == (
        30,
        5,
        300,
    )
    assert s.max_request_bytes == 1_048_576
    assert s.argon2_time_cost >= 2 and s.argon2_memory_kib >= 19456  # OWASP's argon2id floor
    assert not (tmp_path / "data").exists()  # reading settings creates nothing


def test_environment_overrides_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("CRUCIBLE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("CRUCIBLE_SESSION_TTL_HOURS", "12")
    monkeypatch.setenv("CRUCIBLE_BASE_URL", "https://crucible.example.com/")
    monkeypatch.setenv("CRUCIBLE_LOG_FORMAT", "text")
    s = load_settings()
    assert s.resolved_data_dir == tmp_path / "d"
    assert s.session_ttl_hours == 12
    assert s.base_url == "https://crucible.example.com"  # trailing slash dropped
    assert s.secure_cookies is True
    assert s.log_format == "text"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/crucible", "postgresql+psycopg://u:p@db:5432/crucible"),
        ("postgresql://u:p@db/crucible", "postgresql+psycopg://u:p@db/crucible"),
        ("postgresql+psycopg2://u@db/crucible", "postgresql+psycopg://u@db/crucible"),
        (
            "postgresql+psycopg://u@db/crucible?sslmode=require",
            "postgresql+psycopg://u@db/crucible?sslmode=require",
        ),
        ("sqlite:////var/lib/crucible/c.db", "sqlite:////var/lib/crucible/c.db"),
    ],
)
def test_database_url_is_normalised_to_psycopg3(monkeypatch, given, expected):
    monkeypatch.setenv("CRUCIBLE_DATABASE_URL", given)
    s = load_settings()
    assert s.database_url == expected and s.sqlalchemy_url == expected
    assert s.is_sqlite == expected.startswith("sqlite")


def test_empty_database_url_means_the_default(monkeypatch):
    monkeypatch.setenv("CRUCIBLE_DATABASE_URL", "")
    assert load_settings().is_sqlite


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CRUCIBLE_BASE_URL", "notaurl"),
        ("CRUCIBLE_BASE_URL", "ftp://crucible.example.com"),
        ("CRUCIBLE_BASE_URL", "https://"),
        ("CRUCIBLE_SECRET_KEY", "too-short"),
        ("CRUCIBLE_SESSION_TTL_HOURS", "abc"),
        ("CRUCIBLE_SESSION_TTL_HOURS", "0"),
        ("CRUCIBLE_DATABASE_URL", "mysql://u@db/crucible"),
        ("CRUCIBLE_LOG_LEVEL", "VERBOSE"),
        ("CRUCIBLE_LOG_FORMAT", "xml"),
        ("CRUCIBLE_MAX_REQUEST_BYTES", "10"),
        ("CRUCIBLE_ARGON2_MEMORY_KIB", "8"),
        ("CRUCIBLE_LOGIN_WINDOW_SECONDS", "-1"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert variable in str(excinfo.value)


def test_secret_key_error_does_not_echo_the_key(monkeypatch):
    monkeypatch.setenv("CRUCIBLE_SECRET_KEY", "hunter2-hunter2")
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert "CRUCIBLE_SECRET_KEY" in str(excinfo.value) and "hunter2" not in str(excinfo.value)


def test_every_invalid_variable_is_reported_at_once(monkeypatch):
    monkeypatch.setenv("CRUCIBLE_BASE_URL", "notaurl")
    monkeypatch.setenv("CRUCIBLE_SESSION_TTL_HOURS", "abc")
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert "CRUCIBLE_BASE_URL" in str(excinfo.value) and "CRUCIBLE_SESSION_TTL_HOURS" in str(excinfo.value)


# ----------------------------------------------------------------------------- secret key


def test_secret_key_is_generated_once_private_and_reused(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data")
    key = settings.effective_secret_key()
    key_file = tmp_path / "data" / SECRET_KEY_FILE
    assert len(key) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == key
    assert settings.effective_secret_key() == key
    assert load_settings(data_dir=tmp_path / "data").effective_secret_key() == key  # after a restart
    assert load_settings(data_dir=tmp_path / "elsewhere").effective_secret_key() != key


def test_configured_secret_key_wins_and_writes_nothing(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", secret_key="k" * 40)
    assert settings.effective_secret_key() == "k" * 40
    assert not (tmp_path / "data" / SECRET_KEY_FILE).exists()


def test_corrupt_secret_key_file_stops_start_up(tmp_path):
    (tmp_path / SECRET_KEY_FILE).write_text("short\n")
    with pytest.raises(ConfigError, match="CRUCIBLE_SECRET_KEY"):
        load_settings(data_dir=tmp_path).effective_secret_key()


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "value"),
    [("CRUCIBLE_SESSION_TTL_HOURS", "abc"), ("CRUCIBLE_BASE_URL", "notaurl")],
)
def test_cli_refuses_to_start_with_a_bad_variable(tmp_path, variable, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRUCIBLE_")}
    env.update({"CRUCIBLE_DATA_DIR": str(tmp_path / "data"), variable: value})
    # A port nobody uses: should validation regress, the server must not grab a real one.
    result = subprocess.run(
        [str(CRUCIBLE), "api", "--port", "1"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "crucible.db").exists()  # stopped before touching the database


def test_s3_object_store_settings_are_checked_together(tmp_path):
    from backend.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="CRUCIBLE_S3_BUCKET: required when CRUCIBLE_OBJECT_STORE=s3"):
        load_settings(data_dir=tmp_path, object_store="s3")
    with pytest.raises(ConfigError, match="CRUCIBLE_S3_ACCESS_KEY_ID and CRUCIBLE_S3_SECRET_ACCESS_KEY"):
        load_settings(data_dir=tmp_path, object_store="s3", s3_bucket="b", s3_access_key_id="AKIA")
    with pytest.raises(ConfigError, match="CRUCIBLE_S3_ENDPOINT_URL"):
        load_settings(data_dir=tmp_path, s3_endpoint_url="minio:9000")
    ok = load_settings(
        data_dir=tmp_path, object_store="s3", s3_bucket="b", s3_endpoint_url="http://minio:9000/"
    )
    assert ok.s3_endpoint_url == "http://minio:9000"


@pytest.mark.slow
def test_cli_refuses_to_start_when_the_s3_endpoint_is_unreachable(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRUCIBLE_")}
    env.update(
        {
            "CRUCIBLE_DATA_DIR": str(tmp_path / "data"),
            "CRUCIBLE_OBJECT_STORE": "s3",
            "CRUCIBLE_S3_BUCKET": "crucible",
            "CRUCIBLE_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # discard port: nothing listens
            "CRUCIBLE_S3_ACCESS_KEY_ID": "test",
            "CRUCIBLE_S3_SECRET_ACCESS_KEY": "test",
        }
    )
    result = subprocess.run(
        [str(CRUCIBLE), "api", "--port", "1"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "object store" in result.stderr and "127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
