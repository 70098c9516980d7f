"""Settings from CRUCIBLE_* environment variables.

Every setting has a safe default for the embedded install (SQLite and files under
CRUCIBLE_DATA_DIR). A bad value stops start-up with a message naming the variable.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

SECRET_KEY_FILE = "secret_key"
MIN_SECRET_KEY_LENGTH = 32


class ConfigError(Exception):
    """A setting is invalid; the message names the environment variable."""


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A comma-separated list of IPs/CIDRs (checked by the setting's validator)."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in value.split(",") if v.strip())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRUCIBLE_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Where the embedded install keeps its files.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite in the data dir."
    )
    secret_key: str | None = Field(default=None, description="Key for sessions and secret encryption.")
    base_url: str = Field(default="http://localhost:3000", description="Public URL of this install.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    session_ttl_hours: int = Field(default=168, ge=1, le=24 * 365)
    login_max_attempts_per_ip: int = Field(default=30, ge=1)
    login_max_failures_per_account: int = Field(default=5, ge=1)
    login_window_seconds: int = Field(default=300, ge=1)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_kib: int = Field(default=65536, ge=1024)
    # Reverse proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDRs). Empty:
    # the TCP peer is the client. Behind a proxy, set it, or every user shares one rate limit.
    trusted_proxies: str = ""
    # Object store: state versions, plans, archived logs (docs/storage.md).
    object_store: Literal["filesystem", "s3"] = "filesystem"
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint; unset = AWS.")
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""
    # Terraform state backend (docs/state.md). Uploads stream to <data_dir>/tmp/state first.
    state_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, le=5 * 1024**3)
    state_versions_kept: int = Field(default=0, ge=0, description="0 keeps every version.")
    # Diffs, resource/output listings, forced uploads and rollbacks parse a whole state in memory.
    state_in_memory_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1024**3)
    # Where runs' tools reach the state endpoint, when it differs from base_url (e.g. containers
    # that see the server at http://host.docker.internal:3000).
    state_backend_url: str | None = Field(
        default=None, description="State backend URL for runners; default CRUCIBLE_BASE_URL."
    )
    # Runs and the worker (docs/runs.md). The embedded worker runs inside `crucible up`/`api`;
    # `crucible worker` runs more of them elsewhere against the same database.
    worker_enabled: bool = True
    worker_concurrency: int = Field(default=2, ge=1, le=64)
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0, le=300)
    worker_heartbeat_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    proposed_runs_per_stack: int = Field(default=3, ge=1, le=100)
    run_timeout_seconds: int = Field(default=3600, ge=10, le=7 * 24 * 3600)
    cancel_grace_seconds: float = Field(default=10.0, ge=0, le=600)
    workspace_dir: Path | None = Field(
        default=None, description="Run workspaces; default <data_dir>/workspaces."
    )
    local_runner_sandbox: Literal["auto", "off"] = "auto"
    # Host paths a local run may write besides its workspace (os.pathsep-separated, absolute).
    local_runner_writable_paths: str = ""
    docker_host: str | None = Field(default=None, description="Docker engine URL; default DOCKER_HOST.")
    docker_network: str = "none"
    docker_memory: str = "2g"
    docker_cpus: float = Field(default=2.0, gt=0, le=256)
    docker_pids_limit: int = Field(default=1024, ge=16)
    runner_image: str = "crucible-runner:current"
    # Policies (docs/policies.md). "auto": the OPA server when CRUCIBLE_OPA_URL is set, else the
    # best embedded engine installed (opa-eval, then regopy).
    policy_engine: Literal["auto", "opa-eval", "regopy", "opa-server"] = "auto"
    opa_url: str | None = Field(default=None, description="OPA server URL, e.g. http://opa:8181.")
    opa_token: SecretStr | None = Field(default=None, description="Bearer token for the OPA server.")
    policy_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # Evaluation requests carry a whole plan JSON as input: their own body limit.
    policy_input_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024**3)
    # Validation policies are evaluated against each stack's current state this often; 0: only on demand.
    validation_interval_seconds: int = Field(default=3600, ge=0, le=30 * 24 * 3600)
    # VCS webhooks (docs/vcs.md): the largest delivery accepted (GitHub caps its own at 25 MB),
    # how long a rotated-out secret keeps verifying, and the timeout of each call back to the VCS.
    webhook_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=64 * 1024**2)
    webhook_secret_grace_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    webhook_delivery_retention_days: int = Field(default=30, ge=0, le=3650)  # 0 keeps every delivery
    vcs_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Non-public networks VCS API calls may reach (self-hosted GitLab/Gitea); default: none.
    vcs_allowed_networks: str = ""

    @field_validator("opa_url")
    @classmethod
    def _check_opa_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as http://opa:8181")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_policy_engine(self) -> Settings:
        if self.policy_engine == "opa-server" and not self.opa_url:
            raise ValueError("CRUCIBLE_OPA_URL: required when CRUCIBLE_POLICY_ENGINE=opa-server")
        return self

    @field_validator("docker_network")
    @classmethod
    def _check_docker_network(cls, value: str) -> str:
        if not value or value.startswith("container:") or any(c.isspace() for c in value):
            raise ValueError("use none, host or the name of a Docker network")
        return value

    @field_validator("local_runner_writable_paths")
    @classmethod
    def _check_writable_paths(cls, value: str) -> str:
        for item in filter(None, (v.strip() for v in value.split(os.pathsep))):
            path = Path(item)
            if not path.is_absolute():
                raise ValueError(f"{item!r} must be an absolute path")
            if not path.exists():
                raise ValueError(f"{item!r} does not exist (the sandbox can only bind existing paths)")
        return value

    @cached_property
    def writable_paths(self) -> list[Path]:
        return [Path(v.strip()) for v in self.local_runner_writable_paths.split(os.pathsep) if v.strip()]

    @cached_property
    def resolved_workspace_dir(self) -> Path:
        return (self.workspace_dir or self.resolved_data_dir / "workspaces").expanduser().resolve()

    @cached_property
    def vcs_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return _networks(self.vcs_allowed_networks)

    @field_validator("trusted_proxies", "vcs_allowed_networks")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        for item in filter(None, (v.strip() for v in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR such as 10.0.0.0/8") from None
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return _networks(self.trusted_proxies)

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_s3_endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as http://minio:9000")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_s3(self) -> Settings:
        if self.object_store == "s3" and not self.s3_bucket:
            raise ValueError("CRUCIBLE_S3_BUCKET: required when CRUCIBLE_OBJECT_STORE=s3")
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            raise ValueError(
                "CRUCIBLE_S3_ACCESS_KEY_ID and CRUCIBLE_S3_SECRET_ACCESS_KEY must be set together "
                "(or neither, to use boto3's default credentials)"
            )
        return self

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://crucible.example.com")
        return value.rstrip("/")

    @field_validator("state_backend_url")
    @classmethod
    def _check_state_backend_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as http://crucible.internal:3000")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = value.split(":", 1)[0]
        if scheme.startswith("postgres"):
            # Accept the common spellings and use psycopg 3.
            rest = value.split("://", 1)[1] if "://" in value else ""
            return f"postgresql+psycopg://{rest}"
        if scheme.startswith("sqlite"):
            return value
        raise ValueError("must start with sqlite:/// or postgresql://")

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if len(value) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_KEY_LENGTH} characters long")
        return value

    @cached_property
    def state_upload_dir(self) -> Path:
        """Where state uploads are buffered while they are checked (same file system as the
        filesystem object store, so nothing big ever sits in memory)."""
        return self.resolved_data_dir / "tmp" / "state"

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @cached_property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'crucible.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")

    def ensure_data_dir(self) -> Path:
        path = self.resolved_data_dir
        path.mkdir(parents=True, exist_ok=True)
        return path

    def effective_secret_key(self) -> str:
        """The configured key, else the persisted one, else a new one (saved 0600)."""
        if self.secret_key:
            return self.secret_key
        key_file = self.ensure_data_dir() / SECRET_KEY_FILE
        if key_file.exists():
            key = key_file.read_text().strip()
            if len(key) < MIN_SECRET_KEY_LENGTH:
                raise ConfigError(f"{key_file} is corrupt (too short): restore it or set CRUCIBLE_SECRET_KEY")
            return key
        key = secrets.token_urlsafe(48)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        log.warning(
            "CRUCIBLE_SECRET_KEY is not set: generated one and saved it to %s (mode 0600). "
            "Back it up; set CRUCIBLE_SECRET_KEY in production.",
            key_file,
        )
        return key


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["loc"]:
                lines.append(f"CRUCIBLE_{str(err['loc'][0]).upper()}: {msg}")
            else:  # a check across fields names its variables itself
                lines.append(msg)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
