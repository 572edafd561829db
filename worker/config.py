"""Settings from CARILLON_* environment variables, each documented; nothing read at import."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from worker.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    """Everything Carillon reads from its environment. Build it with `Settings.from_env()`."""

    #: CARILLON_HOME: folder of the embedded default (SQLite file, filesystem broker).
    home: Path = Path(".carillon")
    #: CARILLON_DATABASE_URL: SQLAlchemy URL; default SQLite in CARILLON_HOME.
    database_url: str = ""
    #: CARILLON_BROKER_URL: Celery broker; default kombu's filesystem transport in CARILLON_HOME.
    broker_url: str = ""
    #: CARILLON_RESULT_BACKEND: needed by and-join chords only; default the broker's Redis, or
    #: a SQLite results file beside the embedded database.
    result_backend: str = ""
    #: CARILLON_SIGNAL_MIN_INTERVAL: seconds between two accepted triggers of one signal (600).
    signal_min_interval: int = 600
    #: CARILLON_MAX_RUNNING_WORKFLOWS: workflows running data activities at once (20).
    max_running_workflows: int = 20
    #: CARILLON_TICK_SECONDS: period of the tick that fires timers and repairs (1.0).
    tick_seconds: float = 1.0
    #: CARILLON_TECHNICAL_WORKFLOWS: "0" keeps beat from firing technical workflows (1).
    technical_workflows: bool = True
    #: CARILLON_TECHNICAL_REFRESH: seconds between beat's reads of admins' technical settings (5).
    technical_refresh: float = 5.0
    #: CARILLON_TECHNICAL_EVERY: tests and demos only: fire every technical workflow every N
    #: seconds instead of its schedule (0 = off).
    technical_every: int = 0
    #: CARILLON_ANALYTICS_URL: the analytics connector kpiSharing and kpiReconciliation talk
    #: to (POST/GET <url>/kpis); empty: a local file, CARILLON_HOME/analytics/kpis.jsonl.
    analytics_url: str = ""
    #: CARILLON_DELIVERABILITY_URL: where deliverabilityUpdate GETs its bounce rules and mail
    #: domains (JSON); empty: the list shipped with Carillon.
    deliverability_url: str = ""
    #: CARILLON_SHARED_AUDIENCE_URL: where importSharedAudience lists and reads shared
    #: audiences; empty: the directory CARILLON_HOME/shared_audiences/<org>/<name>.csv.
    shared_audience_url: str = ""
    #: CARILLON_BILLING_EMAIL: where the billing technical workflow sends the daily report.
    billing_email: str = "billing@localhost"
    #: CARILLON_REPORT_EMAIL: default recipient of reportSendingNow's PDF report.
    report_email: str = "reports@localhost"
    #: CARILLON_LEASE_SECONDS: a running task whose heartbeat is older is re-enqueued (60).
    lease_seconds: int = 60
    #: CARILLON_REPUBLISH_SECONDS: a pending task older than this is published again (30).
    republish_seconds: int = 30
    #: CARILLON_MAX_ATTEMPTS: executions of one task that all lost their worker before it is
    #: dead (5); an operator's requeue runs it again.
    max_attempts: int = 5
    #: CARILLON_VISIBILITY_TIMEOUT: Redis visibility timeout in seconds (3600).
    visibility_timeout: int = 3600
    #: CARILLON_SOFT_SHUTDOWN_TIMEOUT: seconds a worker's cold shutdown (SIGQUIT, a second
    #: Ctrl-C) lets running tasks go on before it cuts them short and hands their messages
    #: back to the broker (Celery's worker_soft_shutdown_timeout); 0 (default) cuts them at
    #: once. A warm shutdown (SIGTERM) always waits for running tasks to finish.
    soft_shutdown_timeout: int = 0
    #: CARILLON_PREPARED_STATEMENTS: "0" sends the engine's per-hop statements as plain SQL
    #: instead of preparing them once per connection (needed behind a pooler that shares
    #: server connections between transactions, as PgBouncer's transaction mode does) (1).
    prepared_statements: bool = True
    #: CARILLON_SEEDED_HOPS: "0" keeps every activity on the usual claim; by default, on
    #: PostgreSQL, a pure quick activity whose message carries its predecessor's seed is run
    #: and written in one statement (worker/hop.py) (1).
    seeded_hops: bool = True
    #: CARILLON_QUEUES: comma-separated queues a worker consumes (default: all of them).
    queues: tuple[str, ...] = ()
    #: CARILLON_ACTIVITY_MODULES: comma-separated modules registering extra activity types.
    activity_modules: tuple[str, ...] = ()
    #: CARILLON_API_HOST / CARILLON_API_PORT: where `carillon api` and `up` listen.
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    #: CARILLON_PUBLIC_URL: base of absolute links (trigger hrefs); default http://host:port.
    public_url: str = ""
    #: CARILLON_TRACKING_URL: public base of the open pixel and click redirects written into
    #: sent messages (the API's address as recipients reach it); default CARILLON_PUBLIC_URL.
    tracking_url: str = ""
    #: CARILLON_SECRET_KEY: HMAC key signing tracking links; default a random key generated
    #: once into CARILLON_HOME/secret_key (0600). Every API and worker must share it.
    secret_key: str = field(default="", repr=False)
    #: CARILLON_ADMIN_TOKEN: `Authorization: Bearer <it>` alone makes the caller an admin of
    #: every organization (monitoring, technical workflows); empty: no admin login.
    admin_token: str = field(default="", repr=False)
    #: CARILLON_FAILPOINT: test-only crash points (e.g. after_commit_before_publish).
    failpoint: str = ""
    #: CARILLON_DATA_MODEL: YAML file adding profile columns and resources (see resources.py).
    data_model: str = ""
    #: CARILLON_FILES_DIR: where data activities keep the files they pass on; shared by all
    #: workers (a network volume when they run on several machines). Default CARILLON_HOME/files.
    files_dir: Path | None = None
    #: CARILLON_INBOX_DIR: the folder transferFile picks files from. Default CARILLON_HOME/inbox.
    inbox_dir: Path | None = None
    #: CARILLON_TRANSFER_MAX_BYTES: largest download or decompressed file (1 GiB).
    transfer_max_bytes: int = 1 << 30
    #: CARILLON_TRANSFER_TIMEOUT: seconds to connect and between two reads of a download (30).
    transfer_timeout: float = 30.0
    #: CARILLON_TRANSFER_ALLOW_HOSTS: comma-separated hosts or CIDR networks that downloads may
    #: reach although private or loopback, each optionally with `:port` to allow that port
    #: only (default none: only public addresses).
    transfer_allow_hosts: tuple[str, ...] = ()
    #: CARILLON_SMTP_HOST: the SMTP server email deliveries go through; empty: no server,
    #: emails are appended to CARILLON_HOME/outbox/email.jsonl (the embedded default).
    smtp_host: str = ""
    #: CARILLON_SMTP_PORT: its port (25).
    smtp_port: int = 25
    #: CARILLON_SMTP_TLS: none, starttls or ssl (SMTP over TLS from the first byte) (none).
    smtp_tls: str = "none"
    #: CARILLON_SMTP_USER / CARILLON_SMTP_PASSWORD: login when set (use TLS with them).
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    #: CARILLON_SMTP_SENDER: the From address when a delivery sets no sender.
    smtp_sender: str = "carillon@localhost"
    #: CARILLON_SMTP_CONNECTIONS: SMTP connections a batch is sent over at once (4; 1-64).
    smtp_connections: int = 4
    #: CARILLON_SMS_URL / CARILLON_PUSH_URL: HTTP provider of SMS and push messages (one POST
    #: per message with an Idempotency-Key); empty: CARILLON_HOME/outbox/<channel>.jsonl.
    sms_url: str = ""
    push_url: str = ""
    #: CARILLON_CONNECTOR_TIMEOUT: seconds to connect to, and wait for, SMTP and providers (30).
    connector_timeout: float = 30.0
    #: CARILLON_RATE_LIMIT: requests per API key (per client address without one), as
    #: (count, period in seconds), from "N/second|minute|hour"; "off" or "0" (the default:
    #: benchmarks and load tests must not meet it by surprise): none.
    rate_limit: tuple[int, float] | None = None
    #: CARILLON_RATE_LIMIT_BURST: requests a key may make at once before the rate applies
    #: (default twice the count).
    rate_limit_burst: int = 0
    #: CARILLON_RATE_LIMIT_REDIS: Redis URL of the buckets shared by every API process;
    #: default the broker's Redis when it is one, else buckets in each process.
    rate_limit_redis: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("CARILLON_HOME", ".carillon")).absolute()
        settings = cls(
            home=home,
            database_url=env.get("CARILLON_DATABASE_URL", ""),
            broker_url=env.get("CARILLON_BROKER_URL", ""),
            result_backend=env.get("CARILLON_RESULT_BACKEND", ""),
            signal_min_interval=_int(env, "CARILLON_SIGNAL_MIN_INTERVAL", 600, minimum=0),
            max_running_workflows=_int(env, "CARILLON_MAX_RUNNING_WORKFLOWS", 20, minimum=1),
            tick_seconds=_float(env, "CARILLON_TICK_SECONDS", 1.0),
            technical_workflows=env.get("CARILLON_TECHNICAL_WORKFLOWS", "1") != "0",
            technical_refresh=_float(env, "CARILLON_TECHNICAL_REFRESH", 5.0),
            technical_every=_int(env, "CARILLON_TECHNICAL_EVERY", 0, minimum=0),
            analytics_url=env.get("CARILLON_ANALYTICS_URL", ""),
            deliverability_url=env.get("CARILLON_DELIVERABILITY_URL", ""),
            shared_audience_url=env.get("CARILLON_SHARED_AUDIENCE_URL", ""),
            billing_email=env.get("CARILLON_BILLING_EMAIL", "billing@localhost"),
            report_email=env.get("CARILLON_REPORT_EMAIL", "reports@localhost"),
            lease_seconds=_int(env, "CARILLON_LEASE_SECONDS", 60, minimum=2),
            republish_seconds=_int(env, "CARILLON_REPUBLISH_SECONDS", 30, minimum=1),
            max_attempts=_int(env, "CARILLON_MAX_ATTEMPTS", 5, minimum=1),
            visibility_timeout=_int(env, "CARILLON_VISIBILITY_TIMEOUT", 3600, minimum=10),
            soft_shutdown_timeout=_int(
                env, "CARILLON_SOFT_SHUTDOWN_TIMEOUT", 0, minimum=0, maximum=86_400
            ),
            prepared_statements=env.get("CARILLON_PREPARED_STATEMENTS", "1") != "0",
            seeded_hops=env.get("CARILLON_SEEDED_HOPS", "1") != "0",
            queues=_list(env, "CARILLON_QUEUES"),
            activity_modules=_list(env, "CARILLON_ACTIVITY_MODULES"),
            api_host=env.get("CARILLON_API_HOST", "127.0.0.1"),
            api_port=_int(env, "CARILLON_API_PORT", 8080, minimum=1, maximum=65535),
            # A CLI in another shell does not know the port `carillon up --port N` serves
            # on: the API's last start wrote it down (an explicit port setting wins).
            public_url=env.get("CARILLON_PUBLIC_URL", "")
            or ("" if "CARILLON_API_PORT" in env else served_url(home)),
            tracking_url=env.get("CARILLON_TRACKING_URL", ""),
            secret_key=env.get("CARILLON_SECRET_KEY", ""),
            admin_token=_token(env, "CARILLON_ADMIN_TOKEN"),
            failpoint=env.get("CARILLON_FAILPOINT", ""),
            data_model=env.get("CARILLON_DATA_MODEL", ""),
            files_dir=_path(env, "CARILLON_FILES_DIR"),
            inbox_dir=_path(env, "CARILLON_INBOX_DIR"),
            transfer_max_bytes=_int(
                env, "CARILLON_TRANSFER_MAX_BYTES", 1 << 30, minimum=1, maximum=1 << 40
            ),
            transfer_timeout=_float(env, "CARILLON_TRANSFER_TIMEOUT", 30.0),
            transfer_allow_hosts=_list(env, "CARILLON_TRANSFER_ALLOW_HOSTS"),
            smtp_host=env.get("CARILLON_SMTP_HOST", ""),
            smtp_port=_int(env, "CARILLON_SMTP_PORT", 25, minimum=1, maximum=65535),
            smtp_tls=_choice(env, "CARILLON_SMTP_TLS", "none", ("none", "starttls", "ssl")),
            smtp_user=env.get("CARILLON_SMTP_USER", ""),
            smtp_password=env.get("CARILLON_SMTP_PASSWORD", ""),
            smtp_sender=env.get("CARILLON_SMTP_SENDER", "") or "carillon@localhost",
            smtp_connections=_int(env, "CARILLON_SMTP_CONNECTIONS", 4, minimum=1, maximum=64),
            sms_url=_http_url(env, "CARILLON_SMS_URL"),
            push_url=_http_url(env, "CARILLON_PUSH_URL"),
            connector_timeout=_float(env, "CARILLON_CONNECTOR_TIMEOUT", 30.0),
            rate_limit=_rate(env, "CARILLON_RATE_LIMIT", "off"),
            rate_limit_burst=_int(env, "CARILLON_RATE_LIMIT_BURST", 0, minimum=0),
            rate_limit_redis=env.get("CARILLON_RATE_LIMIT_REDIS", ""),
        )
        return settings.resolved()

    def resolved(self) -> Settings:
        """Fill the embedded defaults (SQLite, filesystem broker) for what was left empty."""
        database_url = self.database_url or f"sqlite:///{self.home / 'carillon.sqlite'}"
        broker_url = self.broker_url or "filesystem://"
        result_backend = self.result_backend
        if not result_backend:
            if broker_url.startswith(("redis://", "rediss://")):
                result_backend = broker_url
            else:
                result_backend = f"db+sqlite:///{self.home / 'results.sqlite'}"
        public_url = self.public_url or f"http://{self.api_host}:{self.api_port}"
        return replace(
            self,
            files_dir=(self.files_dir or self.home / "files").absolute(),
            inbox_dir=(self.inbox_dir or self.home / "inbox").absolute(),
            database_url=database_url,
            broker_url=broker_url,
            result_backend=result_backend,
            public_url=public_url.rstrip("/"),
            tracking_url=(self.tracking_url or public_url).rstrip("/"),
            secret_key=self.secret_key or _secret_key(self.home / "secret_key"),
        )

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def files(self) -> Path:
        assert self.files_dir is not None, "call resolved() first"
        return self.files_dir

    @property
    def inbox(self) -> Path:
        assert self.inbox_dir is not None, "call resolved() first"
        return self.inbox_dir

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"


def _int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int = 10**9
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not 0.05 <= value <= 3600:
        raise ConfigError(f"{name} must be between 0.05 and 3600, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "") or default
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _http_url(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if value and not value.lower().startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http(s) URL, got {value[:100]!r}")
    return value


_PERIODS = {"second": 1.0, "s": 1.0, "minute": 60.0, "m": 60.0, "hour": 3600.0, "h": 3600.0}


def _rate(env: Mapping[str, str], name: str, default: str) -> tuple[int, float] | None:
    """`N/second|minute|hour` as (N, seconds); None for "off" or "0"."""
    raw = (env.get(name, "") or default).strip().lower()
    if raw in ("off", "0"):
        return None
    count, _, period = raw.partition("/")
    if not count.isdigit() or period not in _PERIODS or not 0 < int(count) <= 10**6:
        raise ConfigError(
            f"{name} must be N/second, N/minute or N/hour (N from 1 to 1000000), "
            f"or off; got {raw[:100]!r}"
        )
    return int(count), _PERIODS[period]


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "")
    return Path(raw).absolute() if raw else None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _token(env: Mapping[str, str], name: str, minimum: int = 16) -> str:
    value = env.get(name, "").strip()
    if value and len(value) < minimum:  # a guessable admin token would open every org
        raise ConfigError(f"{name} must be at least {minimum} characters long")
    return value


#: File in CARILLON_HOME where `carillon up` and `carillon api` write the URL they serve on.
SERVED_URL_FILE = "api_url"
_SERVED_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]{1,300}")


def record_served_url(home: Path, url: str) -> None:
    """Write down where the API serves (replaced atomically: readers see old or new)."""
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f".{SERVED_URL_FILE}.{os.getpid()}"
    staging.write_text(url + "\n")
    os.replace(staging, home / SERVED_URL_FILE)


def served_url(home: Path) -> str:
    """The URL the API last served on in `home`, or "" (none, unreadable or not a URL)."""
    try:
        with open(home / SERVED_URL_FILE, "rb") as found:
            raw = found.read(1024)
    except OSError:
        return ""
    text = raw.decode("ascii", "replace").strip()
    return text if _SERVED_URL.fullmatch(text) else ""


def _secret_key(path: Path) -> str:
    """The key kept in `path`, created once; concurrent first starts all read the same key."""
    if path.exists():
        return path.read_text().strip()
    import secrets
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp makes it 0600
            out.write(secrets.token_urlsafe(32))
        # link() never replaces: the first process to link wins, the others read its key.
        os.link(staging, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(staging)
    return path.read_text().strip()
