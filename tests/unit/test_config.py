"""Unit tests of Settings.from_env: embedded defaults, derived URLs, and refused values."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import SERVED_URL_FILE, Settings, record_served_url
from worker.errors import ConfigError

# (variable, field, default, smallest accepted value)
INTEGERS = [
    ("CARILLON_SIGNAL_MIN_INTERVAL", "signal_min_interval", 600, 0),
    ("CARILLON_MAX_RUNNING_WORKFLOWS", "max_running_workflows", 20, 1),
    ("CARILLON_LEASE_SECONDS", "lease_seconds", 60, 2),
    ("CARILLON_REPUBLISH_SECONDS", "republish_seconds", 30, 1),
    ("CARILLON_MAX_ATTEMPTS", "max_attempts", 5, 1),
    ("CARILLON_VISIBILITY_TIMEOUT", "visibility_timeout", 3600, 10),
    ("CARILLON_API_PORT", "api_port", 8080, 1),
    ("CARILLON_SOFT_SHUTDOWN_TIMEOUT", "soft_shutdown_timeout", 0, 0),
]
INTEGER_IDS = [variable for variable, *_ in INTEGERS]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def settings(home: Path, **variables: str) -> Settings:
    """Settings from CARILLON_HOME=`home` plus `variables`, and nothing from os.environ."""
    return Settings.from_env({"CARILLON_HOME": str(home), **variables})


def refused(**variables: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(variables)
    return info.value


# Embedded defaults.


def test_the_default_database_is_sqlite_under_carillon_home(home: Path) -> None:
    assert settings(home).database_url == f"sqlite:///{home}/carillon.sqlite"


def test_the_default_broker_is_kombu_filesystem_transport(home: Path) -> None:
    config = settings(home)

    assert config.broker_url == "filesystem://"
    assert config.embedded_broker
    assert config.broker_folder == home / "broker"


def test_the_default_result_backend_is_a_sqlite_file_beside_the_database(home: Path) -> None:
    assert settings(home).result_backend == f"db+sqlite:///{home}/results.sqlite"


def test_carillon_home_defaults_to_dot_carillon_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a working folder and no CARILLON_HOME
    monkeypatch.chdir(tmp_path)

    # When the settings are read from an empty environment
    config = Settings.from_env({})

    # Then home is ./.carillon made absolute, and the embedded files live there
    assert config.home == tmp_path / ".carillon"
    assert config.home.is_absolute()
    assert config.database_url == f"sqlite:///{tmp_path}/.carillon/carillon.sqlite"


def test_a_relative_carillon_home_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert Settings.from_env({"CARILLON_HOME": "state"}).home == tmp_path / "state"


def test_the_documented_defaults_apply_when_nothing_is_set(home: Path) -> None:
    config = settings(home)

    assert config.signal_min_interval == 600
    assert config.max_running_workflows == 20
    assert config.tick_seconds == 1.0
    assert config.lease_seconds == 60
    assert config.republish_seconds == 30
    assert config.max_attempts == 5
    assert config.visibility_timeout == 3600
    assert config.queues == ()
    assert config.activity_modules == ()
    assert (config.api_host, config.api_port) == ("127.0.0.1", 8080)
    assert config.public_url == "http://127.0.0.1:8080"
    assert config.failpoint == ""
    assert config.prepared_statements and config.seeded_hops


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("CARILLON_PREPARED_STATEMENTS", "prepared_statements"),
        ("CARILLON_SEEDED_HOPS", "seeded_hops"),
    ],
)
@pytest.mark.parametrize(
    ("value", "on"), [("0", False), ("1", True), ("", True), ("no", True), ("x" * 10_000, True)]
)
def test_the_hot_path_switches_are_off_only_with_zero(
    home: Path, variable: str, field: str, value: str, on: bool
) -> None:
    """As CARILLON_TECHNICAL_WORKFLOWS: "0" turns a switch off; anything else leaves it on."""
    assert getattr(settings(home, **{variable: value}), field) is on


def test_from_env_reads_the_process_environment_when_given_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARILLON_HOME", str(tmp_path))
    monkeypatch.setenv("CARILLON_MAX_ATTEMPTS", "9")

    config = Settings.from_env()

    assert (config.home, config.max_attempts) == (tmp_path, 9)


def test_an_empty_variable_means_its_default(home: Path) -> None:
    config = settings(home, CARILLON_MAX_ATTEMPTS="", CARILLON_TICK_SECONDS="")

    assert (config.max_attempts, config.tick_seconds) == (5, 1.0)


def test_resolved_fills_the_embedded_defaults_of_a_bare_settings(tmp_path: Path) -> None:
    config = Settings(home=tmp_path).resolved()

    assert config.database_url == f"sqlite:///{tmp_path}/carillon.sqlite"
    assert config.broker_url == "filesystem://"
    assert config.result_backend == f"db+sqlite:///{tmp_path}/results.sqlite"


def test_resolved_keeps_what_was_given(tmp_path: Path) -> None:
    given = Settings(
        home=tmp_path,
        database_url="postgresql+psycopg2://db/carillon",
        broker_url="memory://",
        result_backend="cache+memory://",
        public_url="https://campaign.example.com",
        tracking_url="https://t.example.com",
        secret_key="given",
        files_dir=tmp_path / "shared-files",
        inbox_dir=tmp_path / "drop",
    )

    assert given.resolved() == given


def test_resolved_is_idempotent(home: Path) -> None:
    config = settings(home)

    assert config.resolved() == config


# Production URLs.


@pytest.mark.parametrize("broker", ["redis://redis:6379/0", "rediss://user:pw@redis:6380/1"])
def test_a_redis_broker_implies_the_same_redis_as_result_backend(home: Path, broker: str) -> None:
    config = settings(home, CARILLON_BROKER_URL=broker)

    assert config.result_backend == broker
    assert not config.embedded_broker


def test_an_explicit_result_backend_wins_over_the_redis_broker(home: Path) -> None:
    config = settings(
        home,
        CARILLON_BROKER_URL="redis://redis:6379/0",
        CARILLON_RESULT_BACKEND="redis://results:6379/2",
    )

    assert config.result_backend == "redis://results:6379/2"


def test_a_non_redis_broker_keeps_the_sqlite_result_backend(home: Path) -> None:
    config = settings(home, CARILLON_BROKER_URL="amqp://guest@rabbit//")

    assert config.result_backend == f"db+sqlite:///{home}/results.sqlite"


def test_the_database_url_is_taken_as_given(home: Path) -> None:
    url = "postgresql+psycopg2://carillon:secret@db:5432/carillon"

    assert settings(home, CARILLON_DATABASE_URL=url).database_url == url


def test_the_public_url_defaults_to_the_api_host_and_port(home: Path) -> None:
    config = settings(home, CARILLON_API_HOST="0.0.0.0", CARILLON_API_PORT="9000")

    assert config.public_url == "http://0.0.0.0:9000"


def test_the_public_url_loses_its_trailing_slash(home: Path) -> None:
    config = settings(home, CARILLON_PUBLIC_URL="https://campaign.example.com/")

    assert config.public_url == "https://campaign.example.com"


# Integers and floats.


@pytest.mark.parametrize(("variable", "field", "default", "minimum"), INTEGERS, ids=INTEGER_IDS)
def test_every_integer_variable_is_read(
    home: Path, variable: str, field: str, default: int, minimum: int
) -> None:
    assert getattr(settings(home), field) == default
    assert getattr(settings(home, **{variable: str(minimum)}), field) == minimum
    assert getattr(settings(home, **{variable: "1234"}), field) == 1234


@pytest.mark.parametrize("garbage", ["abc", "1.5", "1e3", "10s", "0x10", " ", "--1", "∞"])
@pytest.mark.parametrize(("variable", "field", "default", "minimum"), INTEGERS, ids=INTEGER_IDS)
def test_every_integer_variable_refuses_garbage_naming_itself(
    variable: str, field: str, default: int, minimum: int, garbage: str
) -> None:
    error = refused(**{variable: garbage})

    assert str(error) == f"{variable} must be an integer, got {garbage!r}"


@pytest.mark.parametrize(("variable", "field", "default", "minimum"), INTEGERS, ids=INTEGER_IDS)
def test_every_integer_variable_refuses_a_value_below_its_minimum(
    variable: str, field: str, default: int, minimum: int
) -> None:
    error = refused(**{variable: str(minimum - 1)})

    assert str(error) == f"{variable} must be >= {minimum}, got {minimum - 1}"


@pytest.mark.parametrize(("variable", "field", "default", "minimum"), INTEGERS, ids=INTEGER_IDS)
def test_every_integer_variable_refuses_a_negative_value(
    variable: str, field: str, default: int, minimum: int
) -> None:
    error = refused(**{variable: "-5"})

    assert variable in str(error)


@pytest.mark.parametrize("port", ["65536", "70000", "99999999"])
def test_an_api_port_above_65535_is_refused(port: str) -> None:
    error = refused(CARILLON_API_PORT=port)

    assert "CARILLON_API_PORT" in str(error)


def test_the_tick_is_read_as_a_float(home: Path) -> None:
    assert settings(home, CARILLON_TICK_SECONDS="0.25").tick_seconds == 0.25
    assert settings(home, CARILLON_TICK_SECONDS="2").tick_seconds == 2.0


@pytest.mark.parametrize("value", ["0.05", "3600"])
def test_the_tick_accepts_its_bounds(home: Path, value: str) -> None:
    assert settings(home, CARILLON_TICK_SECONDS=value).tick_seconds == float(value)


@pytest.mark.parametrize("garbage", ["fast", "1,5", "1s", " ", "0.5.1"])
def test_the_tick_refuses_garbage_naming_itself(garbage: str) -> None:
    error = refused(CARILLON_TICK_SECONDS=garbage)

    assert str(error) == f"CARILLON_TICK_SECONDS must be a number, got {garbage!r}"


@pytest.mark.parametrize("value", ["0", "0.049", "-1", "3600.5", "1e9", "nan", "inf", "-inf"])
def test_the_tick_refuses_values_out_of_range_naming_itself(value: str) -> None:
    error = refused(CARILLON_TICK_SECONDS=value)

    assert str(error).startswith("CARILLON_TICK_SECONDS must be between 0.05 and 3600, got ")


# Lists.


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("flow", ("flow",)),
        ("flow,data,channels", ("flow", "data", "channels")),
        (" flow , data ,, channels ,", ("flow", "data", "channels")),
        ("", ()),
        (" , ,", ()),
    ],
)
def test_queues_are_read_from_comma_separated_values(
    home: Path, raw: str, expected: tuple[str, ...]
) -> None:
    assert settings(home, CARILLON_QUEUES=raw).queues == expected


def test_activity_modules_are_read_from_comma_separated_values(home: Path) -> None:
    config = settings(home, CARILLON_ACTIVITY_MODULES="tests.plugins, acme.activities")

    assert config.activity_modules == ("tests.plugins", "acme.activities")


# Plain strings.


def test_the_failpoint_and_api_host_are_taken_as_given(home: Path) -> None:
    config = settings(
        home, CARILLON_FAILPOINT="after_commit_before_publish", CARILLON_API_HOST="::1"
    )

    assert (config.failpoint, config.api_host) == ("after_commit_before_publish", "::1")


def test_settings_are_frozen(home: Path) -> None:
    config = settings(home)

    with pytest.raises(AttributeError):
        config.max_attempts = 1  # type: ignore[misc]


def test_data_folders_default_under_home_and_follow_the_environment(tmp_path: Path) -> None:
    default = Settings.from_env({"CARILLON_HOME": str(tmp_path)})
    moved = Settings.from_env(
        {
            "CARILLON_HOME": str(tmp_path),
            "CARILLON_FILES_DIR": str(tmp_path / "nfs"),
            "CARILLON_INBOX_DIR": str(tmp_path / "in"),
            "CARILLON_TRANSFER_ALLOW_HOSTS": "127.0.0.1, 10.0.0.0/8",
        }
    )

    assert (default.files, default.inbox) == (tmp_path / "files", tmp_path / "inbox")
    assert (moved.files, moved.inbox) == (tmp_path / "nfs", tmp_path / "in")
    assert moved.transfer_allow_hosts == ("127.0.0.1", "10.0.0.0/8")


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("CARILLON_TRANSFER_MAX_BYTES", "0"),
        ("CARILLON_TRANSFER_MAX_BYTES", "lots"),
        ("CARILLON_TRANSFER_TIMEOUT", "-1"),
    ],
)
def test_transfer_settings_refuse_nonsense(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw})


def test_a_shell_without_port_settings_links_to_where_the_api_last_served(home: Path) -> None:
    # Given `carillon up --port 18080` (or `carillon api --port`) started in this home
    record_served_url(home, "http://127.0.0.1:18080")
    # Then a CLI or worker in another shell, with no port setting, links to that port
    assert settings(home).public_url == "http://127.0.0.1:18080"
    assert settings(home).tracking_url == "http://127.0.0.1:18080"
    # And an explicit port setting or public URL wins over the file
    assert settings(home, CARILLON_API_PORT="9000").public_url == "http://127.0.0.1:9000"
    explicit = settings(home, CARILLON_PUBLIC_URL="https://campaign.example.com/")
    assert explicit.public_url == "https://campaign.example.com"


def test_a_second_start_replaces_the_served_url(home: Path) -> None:
    record_served_url(home, "http://127.0.0.1:18080")
    record_served_url(home, "http://0.0.0.0:9001")
    assert settings(home).public_url == "http://0.0.0.0:9001"
    assert [p.name for p in home.iterdir() if "api_url" in p.name] == [SERVED_URL_FILE]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b"javascript:alert(1)",
        b"http://evil.example/path?x=<script>",
        b"http://127.0.0.1:8080\nhttp://other:1",
        b"ftp://127.0.0.1:21",
        b"\xff\xfe\x00garbage",
        b"http://" + b"a" * 5000,
    ],
    ids=["empty", "newline", "script", "path", "two-lines", "ftp", "binary", "huge"],
)
def test_a_damaged_served_url_file_is_ignored(home: Path, content: bytes) -> None:
    home.mkdir(parents=True)
    (home / SERVED_URL_FILE).write_bytes(content)
    assert settings(home).public_url == "http://127.0.0.1:8080"


def test_a_served_url_file_that_is_a_folder_is_ignored(home: Path) -> None:
    (home / SERVED_URL_FILE).mkdir(parents=True)
    assert settings(home).public_url == "http://127.0.0.1:8080"
