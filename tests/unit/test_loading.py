"""loadFile, updateData and extractFile on the SQLite harness, and the CSV reader's two paths."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, Table, insert, inspect, select

from tests.conftest import Harness
from worker import catalog, csvload, populations, resources
from worker.activities.base import ActivityType, Context, Option, Outcome
from worker.config import Settings
from worker.errors import DefinitionError
from worker.marketing import profile, working_table
from worker.models import LogLine, Organization, Task, Workflow
from worker.registry import register

UTC = dt.UTC


@register
class LoadingTestFile(ActivityType):
    """Carries the file a test wrote (option `path`) on `done`, as transferFile would."""

    name = "loadingTestFile"
    family = "data"
    options = {"path": Option((str,), required=True)}

    def run(self, ctx: Context) -> Outcome:
        path = Path(ctx.activity.options["path"])
        size = path.stat().st_size if path.exists() else 0
        descriptor = {"kind": "file", "path": str(path), "size": size, "name": path.name}
        return Outcome(outputs={"done": descriptor})


# -- helpers shared with tests/integration/test_loading_pg.py --------------------------------


@dataclass
class Ran:
    """What one activity of a finished run left: its task row, its logs, what it passed on."""

    task_id: str
    attempt: int
    state: str
    error: str | None
    outlets: list[str]
    counts: dict[str, Any]
    logs: list[tuple[str, str]]
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def messages(self, level: str | None = None) -> list[str]:
        return [message for lvl, message in self.logs if level is None or lvl == level]

    def population(self) -> dict[str, Any]:
        [descriptor] = [d for d in self.outputs if d["kind"] == "population"]
        return descriptor

    def files(self) -> list[dict[str, Any]]:
        return [d for d in self.outputs if d["kind"] == "file"]


@dataclass
class Lab:
    """A harness seen from one organization: it runs, seeds and reads only its own rows, so
    the same tests run on a fresh SQLite database and on a PostgreSQL database they share."""

    harness: Harness
    org: str

    @property
    def other(self) -> str:
        """Another organization, for isolation checks."""
        return f"{self.org}x"

    @property
    def files(self) -> Path:
        return self.harness.settings.files

    @property
    def postgres(self) -> bool:
        return self.harness.db.dialect.name == "postgresql"

    def utc(self, *parts: int) -> dt.datetime:
        """A UTC datetime as the database gives it back (SQLite keeps them naive)."""
        moment = dt.datetime(*parts, tzinfo=UTC)  # type: ignore[misc]
        return moment if self.postgres else moment.replace(tzinfo=None)

    def org_id(self, name: str | None = None) -> int:
        with self.harness.sessions() as s, s.begin():
            return catalog.ensure_org(s, name or self.org).id

    def save(self, body: dict[str, Any]) -> str:
        return self.harness.save(body, self.org)

    def start(self, body: dict[str, Any]) -> None:
        # By organization: other organizations have workflows of the same name.
        self.harness.engine.command(self.org_id(), self.save(body), "start")

    def run(self, body: dict[str, Any]) -> None:
        self.start(body)
        self.harness.stub.drain()

    def trigger(self, workflow: str, activity: str, parameters: dict[str, Any]) -> None:
        self.harness.engine.trigger(self.org_id(), workflow, activity, "test", parameters)
        self.harness.stub.drain()

    def ran(self, activity: str) -> Ran:
        """The (single) task of `activity`, and what its successors received from it."""
        mine = (
            select(Workflow.id)
            .join(Organization, Organization.id == Workflow.org_id)
            .where(Organization.name == self.org)
        )
        rows = self.harness.query(
            select(Task.id, Task.attempt, Task.state, Task.error, Task.outlets, Task.counts).where(
                Task.activity == activity, Task.workflow_id.in_(mine)
            )
        )
        assert len(rows) == 1, rows
        task_id, attempt, state, error, outlets, counts = rows[0]
        logs = self.harness.query(
            select(LogLine.level, LogLine.message)
            .where(LogLine.task_id == task_id)
            .order_by(LogLine.id)
        )
        outputs: list[dict[str, Any]] = []
        for (inputs,) in self.harness.query(select(Task.inputs).where(Task.workflow_id.in_(mine))):
            carried = (inputs or {}).get(activity)
            if carried is not None and carried not in outputs:
                outputs.append(carried)
        return Ran(
            task_id,
            attempt,
            state,
            error,
            outlets or [],
            counts or {},
            [tuple(r) for r in logs],
            outputs,
        )

    def table_rows(self, name: str) -> list[tuple[Any, ...]]:
        """Every row of a working table, typed by its declared columns, in id order."""
        with self.harness.sessions() as s:
            table = Table(name, MetaData(), autoload_with=s.connection())
            return [tuple(row) for row in s.execute(select(table).order_by(table.c.id))]

    def working_tables(self) -> list[str]:
        """The organization's registered working tables, oldest first."""
        rows = self.harness.query(
            select(working_table.c.name)
            .where(working_table.c.org_id == self.org_id())
            .order_by(working_table.c.created)
        )
        return [name for (name,) in rows]

    def table_exists(self, name: str) -> bool:
        with self.harness.sessions() as s:
            return name in inspect(s.connection()).get_table_names()

    def seed(self, rows: list[dict[str, Any]], org: str | None = None) -> int:
        org_id = self.org_id(org)
        with self.harness.sessions() as s, s.begin():
            for row in rows:
                s.execute(insert(profile).values(org_id=org_id, **row))
        return org_id

    def profiles(self, org_id: int, *columns: str) -> list[tuple[Any, ...]]:
        chosen = [profile.c[name] for name in columns]
        query = select(*chosen).where(profile.c.org_id == org_id).order_by(*chosen)
        return [tuple(row) for row in self.harness.query(query)]


@pytest.fixture
def lab(harness: Harness) -> Lab:
    return Lab(harness, "acme")


def workflow(
    path: Path, *activities: dict[str, Any], wid: str = "load", entry: str = "start"
) -> dict[str, Any]:
    """start (or a signal) -> file1 (carries `path`) -> activities...; end1/end2 to finish."""
    first: dict[str, Any] = {"name": "entry1", "type": entry, "transitions": {"done": "file1"}}
    if entry == "externalSignal":
        first["parameters"] = {"fileName": "string"}
    targets = {t for a in activities for t in a.get("transitions", {}).values()}
    return {
        "id": wid,
        "activities": [
            first,
            {
                "name": "file1",
                "type": "loadingTestFile",
                "path": str(path),
                "transitions": {"done": activities[0]["name"]},
            },
            *activities,
            *({"name": end, "type": "end"} for end in ("end1", "end2") if end in targets),
        ],
    }


def load_step(columns: list[dict[str, Any]], then: str = "end1", **options: Any) -> dict[str, Any]:
    transitions = options.pop("transitions", {"done": then})
    return {
        "name": "loadFile1",
        "type": "loadFile",
        "columns": columns,
        "transitions": transitions,
        **options,
    }


def read_csv(path: str | Path, encoding: str = "utf-8", delimiter: str = ",") -> list[list[str]]:
    with open(path, encoding=encoding, newline="") as handle:
        return list(csv.reader(handle, delimiter=delimiter))


def write(tmp_path: Path, content: str | bytes, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


TYPED = [
    {"name": "name", "type": "string", "required": True},
    {"name": "age", "type": "integer"},
    {"name": "score", "type": "number"},
    {"name": "vip", "type": "boolean"},
    {"name": "birth", "type": "date"},
    {"name": "seen", "type": "datetime"},
    {"name": "joined", "type": "date", "format": "%d/%m/%Y"},
]
TYPED_FILE = (
    "name,age,score,vip,birth,seen,joined\n"
    "Ann,42,3.5,yes,1980-02-29,2021-03-04T05:06:07+02:00,04/03/2021\n"
    "Bob, -7 ,1e3,FALSE,2000-12-31,2021-03-04 05:06,31/12/1999\n"
    "Cy,,,,,,\n"
    "Dee,12x,1,t,,,\n"
    "Eve,1,1,maybe,,,\n"
    "Fay,1,1,1,2021-02-29,,\n"
    "Gus,1,1,1,,2021-13-01T00:00:00,\n"
    "Hal,1,1,1,,,31/02/2020\n"
    ",1,1,1,,,\n"
    "Ida,99999999999999999999,,,,,\n"
    "Jo,1,nan,,,,\n"
    "Kim,+0012,-.5,On,2024-02-29,2024-02-29,1/2/2003\n"
)
TYPED_REJECTS = [
    "line 5: column 'age': '12x' is not an integer",
    "line 6: column 'vip': 'maybe' is not a boolean (true/false, yes/no, 1/0)",
    "line 7: column 'birth': '2021-02-29' is not a date",
    "line 8: column 'seen': '2021-13-01T00:00:00' is not a datetime",
    "line 9: column 'joined': '31/02/2020' is not a date",
    "line 10: column 'name': a value is required",
    "line 11: column 'age': '99999999999999999999' is out of the integer range",
    "line 12: column 'score': 'nan' is not a number",
]


# -- loadFile ---------------------------------------------------------------------------------


def test_load_types_every_column_and_rejects_bad_values_with_line_and_reason(
    lab: Lab, tmp_path: Path
) -> None:
    lab.run(workflow(write(tmp_path, TYPED_FILE), load_step(TYPED)))

    loaded = lab.ran("loadFile1")
    assert loaded.state == "done", loaded.error
    assert loaded.messages("warning") == TYPED_REJECTS
    assert loaded.messages("info") == ["4 line(s) loaded, 8 rejected"]
    assert loaded.counts["loadFile1"] == 4 and loaded.counts["loadFile1Rejected"] == 8
    descriptor = loaded.population()
    assert descriptor["resource"] == "file" and descriptor["count"] == 4
    assert descriptor["columns"] == [c["name"] for c in TYPED]
    assert descriptor["table"] in lab.working_tables()
    utc, day = lab.utc, dt.date
    assert lab.table_rows(descriptor["table"]) == [
        (2, "Ann", 42, 3.5, True, day(1980, 2, 29), utc(2021, 3, 4, 3, 6, 7), day(2021, 3, 4)),
        (3, "Bob", -7, 1000.0, False, day(2000, 12, 31), utc(2021, 3, 4, 5, 6), day(1999, 12, 31)),
        (4, "Cy", None, None, None, None, None, None),
        (13, "Kim", 12, -0.5, True, day(2024, 2, 29), utc(2024, 2, 29), day(2003, 2, 1)),
    ]


def test_header_columns_match_by_name_in_any_order_and_extra_ones_are_ignored(
    lab: Lab, tmp_path: Path
) -> None:
    path = write(tmp_path, " Extra ,N,Email\nx,1,a@example.com\ny,2,b@example.com\n")
    columns = [{"name": "email", "type": "string"}, {"name": "n", "type": "integer"}]
    lab.run(workflow(path, load_step(columns)))

    loaded = lab.ran("loadFile1")
    assert loaded.state == "done", loaded.error
    assert loaded.population()["columns"] == ["email", "n"]
    rows = lab.table_rows(loaded.population()["table"])
    assert rows == [(2, "a@example.com", 1), (3, "b@example.com", 2)]


def test_a_header_in_another_order_is_loaded_in_that_order(lab: Lab, tmp_path: Path) -> None:
    path = write(tmp_path, "N,Email\n1,a@example.com\n2,b@example.com\n")
    columns = [{"name": "email", "type": "string"}, {"name": "n", "type": "integer"}]
    lab.run(workflow(path, load_step(columns)))

    rows = lab.table_rows(lab.ran("loadFile1").population()["table"])
    assert rows == [(2, "a@example.com", 1), (3, "b@example.com", 2)]


def test_without_a_header_fields_are_the_declared_columns_in_order(
    lab: Lab, tmp_path: Path
) -> None:
    path = write(tmp_path, "a@example.com;1\nb@example.com;2")
    columns = [{"name": "email", "type": "string"}, {"name": "n", "type": "integer"}]
    lab.run(workflow(path, load_step(columns, header=False, delimiter=";")))

    rows = lab.table_rows(lab.ran("loadFile1").population()["table"])
    assert rows == [(1, "a@example.com", 1), (2, "b@example.com", 2)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("email,other\na,b\n", "the header lacks column(s) 'n' (it has 'email', 'other')"),
        ("email,n,N\na,1,2\n", "the header names column 'n' twice"),
        ("", "the file is empty: no header line"),
        (b"em\xffail,n\n", "line 1: the header cannot be read: bytes that are not utf-8"),
    ],
)
def test_a_header_that_does_not_name_the_columns_fails_the_activity(
    lab: Lab, tmp_path: Path, content: str | bytes, message: str
) -> None:
    columns = [{"name": "email", "type": "string"}, {"name": "n", "type": "integer"}]
    lab.run(workflow(write(tmp_path, content), load_step(columns)))

    loaded = lab.ran("loadFile1")
    assert loaded.state == "failed"
    assert message in (loaded.error or "")
    assert lab.working_tables() == []


def test_a_missing_file_fails_the_activity_clearly(lab: Lab, tmp_path: Path) -> None:
    columns = [{"name": "email", "type": "string"}]
    lab.run(workflow(tmp_path / "gone.csv", load_step(columns)))

    loaded = lab.ran("loadFile1")
    assert loaded.state == "failed"
    assert "cannot read the file gone.csv: No such file or directory" in (loaded.error or "")


def test_latin_1_and_a_utf_8_byte_order_mark_are_read(lab: Lab, tmp_path: Path) -> None:
    latin = write(tmp_path, "name;city\nZoë;Köln\n".encode("latin-1"), "latin.csv")
    bom = write(tmp_path, "\ufeffname;city\r\nZoë;Köln\r\n".encode(), "bom.csv")
    columns = [{"name": "name", "type": "string"}, {"name": "city", "type": "string"}]
    for path, encoding in ((latin, "latin-1"), (bom, "utf-8")):
        body = workflow(path, load_step(columns, delimiter=";", encoding=encoding))
        lab.run({**body, "id": path.stem})

    tables = lab.working_tables()
    assert [lab.table_rows(name) for name in tables] == [[(2, "Zoë", "Köln")]] * 2


def test_quoted_fields_keep_delimiters_quotes_and_newlines_and_line_numbers_stay_right(
    lab: Lab, tmp_path: Path
) -> None:
    content = (
        "ref,note,n\n"
        'a,"x, y",1\n'
        'b,"multi\nline\r\nnote",2\n'
        'c,"say ""hi""",3\n'
        "d,plain,oops\n"
        'e,"no end,4\n'
        "f,after,5\n"
    )
    columns = [
        {"name": "ref", "type": "string"},
        {"name": "note", "type": "string"},
        {"name": "n", "type": "integer"},
    ]
    lab.run(workflow(write(tmp_path, content), load_step(columns)))

    loaded = lab.ran("loadFile1")
    assert loaded.messages("warning") == [
        "line 7: column 'n': 'oops' is not an integer",
        "line 8: malformed CSV (unexpected end of data)",
    ]
    assert lab.table_rows(loaded.population()["table"]) == [
        (2, "a", "x, y", 1),
        (3, "b", "multi\nline\r\nnote", 2),
        (6, "c", 'say "hi"', 3),
    ]


def test_rejected_lines_go_to_the_reject_outlet_with_number_reason_and_raw_text(
    lab: Lab, tmp_path: Path
) -> None:
    good = [f"p{i}@example.com,{i}\n" for i in range(1_200)]
    bad = [f"short{i}\n" for i in range(25)]
    content = "".join(["email,n\n", *good[:3], "\n\n", *bad, *good[3:]])
    columns = [{"name": "email", "type": "string"}, {"name": "n", "type": "integer"}]
    step = load_step(columns, transitions={"done": "end1", "reject": "end2"})
    lab.run(workflow(write(tmp_path, content), step))

    loaded = lab.ran("loadFile1")
    assert loaded.outlets == ["done", "reject"]
    # Blank lines are skipped, not rejected; only the first 20 reasons are logged.
    first_bad = 2 + 3 + 2  # header, three good lines, two blank lines
    assert loaded.messages("warning") == [
        f"line {first_bad + i}: expected 2 fields, found 1" for i in range(20)
    ]
    assert loaded.messages("info") == ["1,200 line(s) loaded, 25 rejected"]
    [reject_file] = loaded.files()
    assert reject_file["name"] == "loadFile1-rejects.csv"
    rows = read_csv(reject_file["path"])
    assert rows[0] == ["line", "reason", "raw"]
    assert rows[1:] == [
        [str(first_bad + i), "expected 2 fields, found 1", f"short{i}"] for i in range(25)
    ]
    assert Path(reject_file["path"]).stat().st_size == reject_file["size"]
    loaded_ids = [row[0] for row in lab.table_rows(loaded.population()["table"])]
    assert loaded_ids == [2, 3, 4, *range(first_bad + 25, first_bad + 25 + 1_197)]


def test_without_a_reject_transition_only_done_fires_and_no_file_is_written(
    lab: Lab, tmp_path: Path
) -> None:
    columns = [{"name": "email", "type": "string"}, {"name": "n", "type": "integer"}]
    lab.run(workflow(write(tmp_path, "email,n\na,1\nb\n"), load_step(columns)))

    loaded = lab.ran("loadFile1")
    assert loaded.outlets == ["done"]
    assert loaded.messages("warning") == ["line 3: expected 2 fields, found 1"]
    assert not list(lab.files.rglob("*.csv*"))


def test_more_rejects_than_max_errors_fail_the_load_and_leave_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    content = "email,n\na,1\nb,x\nc,2\nd,y\ne,z\nf,3\n"
    columns = [{"name": "email", "type": "string"}, {"name": "n", "type": "integer"}]
    step = load_step(columns, maxErrors=2, transitions={"done": "end1", "reject": "end2"})
    lab.run(workflow(write(tmp_path, content), step))

    loaded = lab.ran("loadFile1")
    assert loaded.state == "failed"
    expected = "more than 2 line(s) rejected (maxErrors): loading stopped at line 6"
    assert expected in (loaded.error or "")
    assert len(loaded.messages("warning")) == 3  # the reasons are logged even so
    assert lab.working_tables() == []
    assert not lab.table_exists(populations.table_name(loaded.task_id, loaded.attempt))
    assert not list(lab.files.rglob("*.csv*"))


def test_hostile_lines_are_rejected_one_by_one_and_formulas_are_kept_as_text(
    lab: Lab, tmp_path: Path
) -> None:
    content = b"".join(
        [
            b"name,n\n",
            b"ok1,1\n",
            b"x" * 10_000_000 + b",2\n",
            b"nul\x00byte,3\n",
            b"bad\xff\xfe,4\n",
            b"=cmd|' /C calc'!A0,5\n",
            b"ok2,6\n",
        ]
    )
    columns = [{"name": "name", "type": "string"}, {"name": "n", "type": "integer"}]
    lab.run(workflow(write(tmp_path, content), load_step(columns)))

    loaded = lab.ran("loadFile1")
    assert loaded.messages("warning") == [
        "line 3: line longer than 1,048,576 bytes",
        "line 4: NUL byte in the line",
        "line 5: bytes that are not utf-8 at position 4",
    ]
    rows = lab.table_rows(loaded.population()["table"])
    assert rows == [(2, "ok1", 1), (6, "=cmd|' /C calc'!A0", 5), (7, "ok2", 6)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"columns": []}, "option 'columns': must be a non-empty list"),
        ({"columns": [{"name": "id", "type": "string"}]}, "'id' is reserved"),
        ({"columns": [{"name": "a b", "type": "string"}]}, "columns[0].name must match"),
        ({"columns": [{"name": "a", "type": "text"}]}, "columns[0].type must be one of"),
        (
            {"columns": [{"name": "a", "type": "string"}, {"name": "A", "type": "date"}]},
            "column 'A' is declared twice",
        ),
        (
            {"columns": [{"name": "a", "type": "date", "format": "%m/%Y"}]},
            "must contain the day, month and year",
        ),
        (
            {"columns": [{"name": "a", "type": "integer", "format": "%d"}]},
            "only date and datetime columns take a format",
        ),
        ({"encoding": "klingon"}, "unknown encoding 'klingon'"),
        ({"encoding": "utf-16"}, "'utf-16' is not ASCII-compatible"),
        ({"delimiter": ",,"}, "option 'delimiter': must be exactly one character"),
        ({"delimiter": "a"}, "must be an ASCII punctuation, space or tab character"),
        ({"delimiter": "'"}, "'delimiter' and 'quote' must differ"),
        ({"maxErrors": -1}, "option 'maxErrors': must be between 0 and"),
        ({"maxLineBytes": 1 << 40}, "option 'maxLineBytes': must be between 64 and"),
        ({"header": "yes"}, "option 'header' must be bool"),
    ],
)
def test_bad_load_options_are_refused_when_the_workflow_is_saved(
    lab: Lab, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    step = load_step([{"name": "a", "type": "string"}], quote="'") | options
    with pytest.raises(DefinitionError) as refused:
        lab.save(workflow(tmp_path / "x.csv", step))
    assert "activity 'loadFile1'" in refused.value.message
    assert message in refused.value.message


# -- the CSV reader's block path (PostgreSQL) without a database -------------------------------


def _copy_data(
    content: bytes, columns: list[dict[str, Any]], **options: Any
) -> tuple[bytes, list[tuple[int, str]]]:
    rejects: list[tuple[int, str]] = []
    reader = csvload.CsvReader(
        io.BytesIO(content),
        csvload.parse_columns(columns),
        on_reject=lambda line, reason, raw: rejects.append((line, reason)),
        **options,
    )
    return b"".join(reader.copy_chunks()), rejects


def test_plain_blocks_go_to_copy_as_they_are_prefixed_with_their_line_numbers() -> None:
    columns = [{"name": "a", "type": "string"}, {"name": "d", "type": "date"}]
    content = b'a;d\r\nx;2020-01-31\r\ny;\r\n"z";"2020-02-29"\r\n"";""'
    data, rejects = _copy_data(content, columns, delimiter=";")

    # As they are (the record path would rewrite them), without quotes around plain values.
    assert data == b"2,x,2020-01-31\n3,y,\n4,z,2020-02-29\n5,,\n"
    assert rejects == []


@pytest.mark.parametrize("day", ["0000-02-29", "1900-02-29", "2023-02-29", "2021-04-31"])
def test_the_block_path_refuses_dates_that_do_not_exist(day: str) -> None:
    columns = [{"name": "d", "type": "date"}]
    data, rejects = _copy_data(f"d\n2000-02-29\n{day}\n".encode(), columns)

    assert data == b"2,2000-02-29\n"
    assert rejects == [(3, f"column 'd': {day!r} is not a date")]


def test_lines_with_values_that_need_quotes_are_written_back_quoted() -> None:
    columns = [{"name": "a", "type": "string"}, {"name": "b", "type": "boolean"}]
    data, rejects = _copy_data(b'a,b\n"say ""hi""",yes\n"x,y",no\n', columns)

    assert data == b'2,"say ""hi""",1\n3,"x,y",0\n'
    assert rejects == []


def test_a_block_with_one_bad_line_is_read_line_by_line_and_keeps_the_good_ones() -> None:
    columns = [{"name": "a", "type": "string"}, {"name": "n", "type": "integer"}]
    content = b"a,n\n" + b"".join(b"v%d,%d\n" % (i, i) for i in range(50_000))
    content = content.replace(b"v777,777", b'"v,777",777').replace(b"v9,9\n", b"v9,nine\n")
    data, rejects = _copy_data(content, columns)

    assert rejects == [(11, "column 'n': 'nine' is not an integer")]
    lines = data.decode().splitlines()
    assert len(lines) == 49_999
    assert lines[0] == "2,v0,0" and lines[-1] == "50001,v49999,49999"
    assert '779,"v,777",777' in lines


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("integer", "-?[0-9+ ]{0,21}"),
        ("number", "-?[0-9.eE+ ]{0,20}"),
        ("boolean", "(true|false|yes|no|on|off|t|f|y|n|1|0|TRUE|No|x| )"),
        ("date", "[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9 -]{0,12}"),
        ("datetime", "[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?[Z+0-9:]{0,6}"),
    ],
)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_value_the_block_path_takes_the_record_path_takes_too(
    kind: str, text: str, data: st.DataObject
) -> None:
    value = data.draw(st.from_regex(text, fullmatch=True))
    field = f'"{value}"' if data.draw(st.booleans()) else value
    column = csvload.Column("v", kind)
    pattern = csvload._block_regex([column], ",", '"')
    convert = csvload.converter(column, "postgresql")
    assert convert is not None
    if pattern.fullmatch(field.encode() + b"\n"):
        convert(value)  # must not raise: both paths accept the same lines


# -- updateData -------------------------------------------------------------------------------

PEOPLE = [
    {"name": "email", "type": "string"},
    {"name": "firstName", "type": "string"},
    {"name": "country", "type": "string"},
]


def update_flow(
    tmp_path: Path, content: str, columns: list[dict[str, Any]], **update: Any
) -> dict[str, Any]:
    step = {"name": "updateData1", "type": "updateData", "transitions": {"done": "end1"}}
    load = load_step(columns, then="updateData1")
    return workflow(write(tmp_path, content), load, step | update)


def test_upsert_updates_and_inserts_only_in_the_workflows_organization(
    lab: Lab, tmp_path: Path
) -> None:
    acme = lab.seed(
        [
            {"email": "a@example.com", "firstName": "Old", "country": "DE"},
            {"email": "keep@example.com", "firstName": "Keep"},
        ]
    )
    other = lab.seed([{"email": "a@example.com", "firstName": "Other"}], lab.other)
    before = dt.datetime.now(UTC)
    content = "email,firstName,country\na@example.com,New,FR\nb@example.com,Bee,\n"
    lab.run(update_flow(tmp_path, content, PEOPLE, operation="upsert", key=["email"]))

    done = lab.ran("updateData1")
    assert done.state == "done", done.error
    assert done.messages() == ["1 record(s) inserted, 1 updated"]
    assert done.counts["updateData1"] == 2
    assert (done.counts["updateData1Inserted"], done.counts["updateData1Updated"]) == (1, 1)
    assert lab.profiles(acme, "email", "firstName", "country") == [
        ("a@example.com", "New", "FR"),
        ("b@example.com", "Bee", None),
        ("keep@example.com", "Keep", None),
    ]
    assert lab.profiles(other, "email", "firstName", "country") == [
        ("a@example.com", "Other", None)
    ]
    stamps = lab.profiles(acme, "email", "created", "lastModified")
    assert [(e, m > before) for e, _c, m in stamps] == [
        ("a@example.com", True),
        ("b@example.com", True),
        ("keep@example.com", False),
    ]
    output = done.population()
    assert output["resource"] == "profile" and output["count"] == 2
    changed = lab.harness.query(
        select(profile.c.id).where(
            profile.c.org_id == acme, profile.c.email.in_(["a@example.com", "b@example.com"])
        )
    )
    assert {row[0] for row in lab.table_rows(output["table"])} == {row[0] for row in changed}


def test_a_key_repeated_in_the_input_takes_the_last_line_and_keyless_lines_are_skipped(
    lab: Lab, tmp_path: Path
) -> None:
    acme = lab.org_id()
    content = (
        "email,firstName,country\n"
        "a@example.com,First,FR\n"
        ",Nobody,FR\n"
        "a@example.com,Second,DE\n"
        "b@example.com,Bee,FR\n"
    )
    body = update_flow(tmp_path, content, PEOPLE, operation="insert", key=["email"], batchSize=100)
    lab.run(body)

    done = lab.ran("updateData1")
    assert done.messages() == [
        "1 input record(s) without a key value skipped",
        "1 input record(s) repeat a key: the last line wins",
        "2 record(s) inserted",
    ]
    assert lab.profiles(acme, "email", "firstName", "country") == [
        ("a@example.com", "Second", "DE"),
        ("b@example.com", "Bee", "FR"),
    ]


@pytest.mark.parametrize(
    ("operation", "expected", "message"),
    [
        (
            "insert",
            [("a@example.com", "A"), ("b@example.com", "New B"), ("c@example.com", "C")],
            "1 record(s) inserted, 1 already present",
        ),
        ("update", [("a@example.com", "A"), ("c@example.com", "New C")], "1 record(s) updated"),
        ("delete", [("a@example.com", "A")], "1 record(s) deleted"),
    ],
)
def test_insert_update_and_delete_touch_only_what_they_should(
    lab: Lab, tmp_path: Path, operation: str, expected: list[tuple[str, str]], message: str
) -> None:
    acme = lab.seed(
        [{"email": "a@example.com", "firstName": "A"}, {"email": "c@example.com", "firstName": "C"}]
    )
    other = lab.seed([{"email": "c@example.com", "firstName": "Other C"}], lab.other)
    content = "email,firstName\nb@example.com,New B\nc@example.com,New C\n"
    lab.run(update_flow(tmp_path, content, PEOPLE[:2], operation=operation, key=["email"]))

    done = lab.ran("updateData1")
    assert done.state == "done", done.error
    assert done.messages() == [message]
    assert done.population()["count"] == 1
    assert lab.profiles(acme, "email", "firstName") == expected
    assert lab.profiles(other, "email", "firstName") == [("c@example.com", "Other C")]


def test_upsert_by_crm_id_keeps_not_null_fields_when_the_input_has_no_value(
    lab: Lab, tmp_path: Path
) -> None:
    acme = lab.seed([{"crmId": "C1", "emailOptOut": True, "city": "Lyon"}])
    content = "crmId,optOut,city\nC1,,\nC2,,Paris\nC3,yes,\n"
    columns = [
        {"name": "crmId", "type": "string", "required": True},
        {"name": "optOut", "type": "boolean"},
        {"name": "city", "type": "string"},
    ]
    mapping = {"crmId": "crmId", "emailOptOut": "optOut", "city": "city"}
    lab.run(
        update_flow(tmp_path, content, columns, operation="upsert", key=["crmId"], mapping=mapping)
    )

    assert lab.ran("updateData1").messages() == ["2 record(s) inserted, 1 updated"]
    # An empty value clears a nullable field; a NOT NULL one keeps its value (or default).
    assert lab.profiles(acme, "crmId", "emailOptOut", "city") == [
        ("C1", True, None),
        ("C2", False, "Paris"),
        ("C3", True, None),
    ]


def test_batches_cover_every_input_record(lab: Lab, tmp_path: Path) -> None:
    acme = lab.seed([{"email": f"p{i}@example.com", "firstName": "old"} for i in range(0, 250, 2)])
    content = "email,firstName\n" + "".join(f"p{i}@example.com,new\n" for i in range(250))
    lab.run(
        update_flow(tmp_path, content, PEOPLE[:2], operation="upsert", key=["email"], batchSize=100)
    )

    done = lab.ran("updateData1")
    assert done.messages() == ["125 record(s) inserted, 125 updated"]
    assert lab.profiles(acme, "firstName") == [("new",)] * 250
    assert done.population()["count"] == 250


def test_a_population_of_profiles_is_deleted_by_id(lab: Lab, tmp_path: Path) -> None:
    acme = lab.seed([{"email": "keep@example.com"}])
    content = "email,firstName\na@example.com,A\nb@example.com,B\n"
    body = update_flow(tmp_path, content, PEOPLE[:2], operation="upsert", key=["email"])
    body["activities"][3]["transitions"] = {"done": "updateData2"}
    delete = {"name": "updateData2", "type": "updateData", "operation": "delete", "key": ["id"]}
    body["activities"].insert(4, delete | {"transitions": {"done": "end1"}})
    lab.run(body)

    assert lab.ran("updateData2").messages() == ["2 record(s) deleted"]
    assert lab.profiles(acme, "email") == [("keep@example.com",)]


def test_extension_fields_and_resources_of_the_data_model_are_written(tmp_path: Path) -> None:
    model = tmp_path / "model.yaml"
    model.write_text(
        "profile: {columns: {points: integer}}\n"
        "resources: {store: {columns: {code: string, city: string}}}\n"
    )
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'model.sqlite'}",
        broker_url="memory://",
        result_backend="cache+memory://",
        data_model=str(model),
    ).resolved()
    harness = Harness(settings)
    try:
        stores, people = Lab(harness, "stores"), Lab(harness, "people")
        columns = [{"name": "code", "type": "string"}, {"name": "city", "type": "string"}]
        content = "code,city\nS1,Lyon\nS2,Nantes\n"
        body = update_flow(
            tmp_path, content, columns, operation="upsert", key=["code"], resource="store"
        )
        stores.run(body)
        columns = [{"name": "email", "type": "string"}, {"name": "points", "type": "integer"}]
        body = update_flow(
            tmp_path, "email,points\na@example.com,12\n", columns, operation="upsert", key=["email"]
        )
        people.run(body)

        assert stores.ran("updateData1").messages() == ["2 record(s) inserted, 0 updated"]
        catalog = resources.catalog_for(str(model))
        store = catalog.get("store").table
        rows = harness.query(
            select(store.c.org_id, store.c.code, store.c.city).order_by(store.c.code)
        )
        assert [tuple(row) for row in rows] == [
            (stores.org_id(), "S1", "Lyon"),
            (stores.org_id(), "S2", "Nantes"),
        ]
        person = catalog.get("profile").table
        rows = harness.query(select(person.c.email, person.c.points))
        assert [tuple(row) for row in rows] == [("a@example.com", 12)]
    finally:
        harness.db.dispose()


@pytest.mark.parametrize(
    ("columns", "content", "update", "message"),
    [
        (
            [{"name": "email", "type": "string"}, {"name": "birthDate", "type": "string"}],
            "email,birthDate\na@example.com,1990-01-01\n",
            {"operation": "upsert", "key": ["email"]},
            "input column 'birthDate' holds string values, field 'birthDate' takes date values",
        ),
        (
            PEOPLE,
            "email,firstName,country\na@example.com,A,FR\n",
            {
                "operation": "upsert",
                "key": ["email"],
                "mapping": {"email": "email", "x": "country"},
            },
            "mapping: unknown field 'x' of resource 'profile'",
        ),
        (
            PEOPLE,
            "email,firstName,country\na@example.com,A,FR\n",
            {"operation": "upsert", "key": ["email"], "mapping": {"email": "mail"}},
            "mapping: the input has no column 'mail' (it has id, email, firstName, country)",
        ),
        (
            PEOPLE[:1],
            "email\na@example.com\n",
            {"operation": "update", "key": ["email"]},
            "nothing to update: map at least one field besides the key",
        ),
        (
            PEOPLE,
            "email,firstName,country\na@example.com,A,FR\n",
            {"operation": "upsert", "key": ["crmId"]},
            "key field 'crmId' has no input column: add it to 'mapping'",
        ),
        (
            PEOPLE,
            "email,firstName,country\nb@example.com,B,FR\n" + "a@example.com,A," + "x" * 65 + "\n",
            {"operation": "upsert", "key": ["email"]},
            "input record 3: the value of 'country' is longer than 64 characters",
        ),
        (
            PEOPLE,
            "email,firstName,country\na@example.com,A,FR\n",
            {"operation": "upsert", "key": ["email"], "resource": "store"},
            "unknown resource 'store'",
        ),
    ],
)
def test_update_problems_fail_the_activity_and_write_nothing(
    lab: Lab,
    tmp_path: Path,
    columns: list[dict[str, Any]],
    content: str,
    update: dict[str, Any],
    message: str,
) -> None:
    lab.run(update_flow(tmp_path, content, columns, **update))

    done = lab.ran("updateData1")
    assert done.state == "failed"
    assert message in (done.error or "")
    assert lab.profiles(lab.org_id(), "email") == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"operation": "merge"}, "option 'operation': must be one of 'insert'"),
        ({"key": []}, "option 'key': must list 1 to 8 field names"),
        ({"key": ["email", "email"]}, "option 'key': names a field twice"),
        ({"mapping": {"email": 3}}, "the source of 'email' must be an input column name"),
        ({"batchSize": 0}, "option 'batchSize': must be between 100 and 1,000,000"),
        ({"resource": "x;drop"}, "option 'resource': must be a resource name"),
    ],
)
def test_bad_update_options_are_refused_when_the_workflow_is_saved(
    lab: Lab, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    body = update_flow(tmp_path, "email\n", PEOPLE[:1], operation="upsert", key=["email"])
    body["activities"][3] |= options
    with pytest.raises(DefinitionError) as refused:
        lab.save(body)
    assert message in refused.value.message


# -- extractFile ------------------------------------------------------------------------------

EXTRACT_COLUMNS = [
    {"name": "name", "type": "string"},
    {"name": "vip", "type": "boolean"},
    {"name": "birth", "type": "date"},
    {"name": "seen", "type": "datetime"},
    {"name": "score", "type": "number"},
    {"name": "n", "type": "integer"},
]
EXTRACT_FILE = (
    "name,vip,birth,seen,score,n\n"
    "Ann,yes,1980-02-29,2021-03-04T05:06:07.5+02:00,3.5,1\n"
    '"=1+2",no,,,100,-5\n'
    "-5,,,,,\n"
    "+33612345678,,,,,\n"
    "@SUM(A1),,,,,\n"
    "-2+3,,,,,\n"
    '"a;b ""c""",,,,,\n'
)
EXTRACTED = [
    ["Name", "VIP?", "born", "seen", "score", "n", "line"],
    ["Ann", "true", "1980-02-29", "2021-03-04T03:06:07Z", "3.5", "1", "2"],
    ["'=1+2", "false", "", "", "100", "-5", "3"],
    ["-5", "", "", "", "", "", "4"],
    ["+33612345678", "", "", "", "", "", "5"],
    ["'@SUM(A1)", "", "", "", "", "", "6"],
    ["'-2+3", "", "", "", "", "", "7"],
    ['a;b "c"', "", "", "", "", "", "8"],
]


def extract_flow(tmp_path: Path, content: str, **extract: Any) -> dict[str, Any]:
    step = {
        "name": "extractFile1",
        "type": "extractFile",
        "columns": [
            {"name": "Name", "field": "name"},
            {"name": "VIP?", "field": "vip"},
            {"name": "born", "field": "birth"},
            {"name": "seen", "field": "seen"},
            {"name": "score", "field": "score"},
            {"name": "n", "field": "n"},
            {"name": "line", "field": "id"},
        ],
        "transitions": {"done": "end1"},
    }
    flow = extract.pop("flow", {})
    load = load_step(EXTRACT_COLUMNS, then="extractFile1")
    return workflow(write(tmp_path, content), load, step | extract, **flow)


def test_extract_writes_the_header_and_formatted_values_and_defuses_formulas(
    lab: Lab, tmp_path: Path
) -> None:
    lab.run(extract_flow(tmp_path, EXTRACT_FILE, delimiter=";"))

    done = lab.ran("extractFile1")
    assert done.state == "done", done.error
    assert done.messages() == ["7 record(s) extracted to extractFile1.csv"]
    assert done.counts["extractFile1"] == 7
    [extract] = done.files()
    assert extract["name"] == "extractFile1.csv"
    assert read_csv(extract["path"], delimiter=";") == EXTRACTED
    assert Path(extract["path"]).stat().st_size == extract["size"]
    assert Path(extract["path"]).read_bytes().startswith(b"Name;VIP?;born;seen")


def test_extract_can_keep_formulas_and_skip_the_header(lab: Lab, tmp_path: Path) -> None:
    lab.run(extract_flow(tmp_path, EXTRACT_FILE, escapeFormulas=False, header=False))

    [extract] = lab.ran("extractFile1").files()
    assert [row[0] for row in read_csv(extract["path"])] == [
        "Ann",
        "=1+2",
        "-5",
        "+33612345678",
        "@SUM(A1)",
        "-2+3",
        'a;b "c"',
    ]


def test_extract_of_profiles_joins_their_fields_in_the_organization(
    lab: Lab, tmp_path: Path
) -> None:
    lab.seed([{"email": "a@example.com", "firstName": "A", "city": "Lyon"}])
    lab.seed([{"email": "a@example.com", "firstName": "Other"}], lab.other)
    content = "email,firstName\na@example.com,Ann\nb@example.com,Bob\n"
    body = update_flow(tmp_path, content, PEOPLE[:2], operation="upsert", key=["email"])
    body["activities"][3]["transitions"] = {"done": "extractFile1"}
    body["activities"].insert(
        4,
        {
            "name": "extractFile1",
            "type": "extractFile",
            "fileName": "people.csv",
            "encoding": "utf-8-sig",
            "columns": [
                {"name": "email", "field": "email"},
                {"name": "first", "field": "firstName"},
                {"name": "city", "field": "city"},
                {"name": "opt-out", "field": "emailOptOut"},
            ],
            "transitions": {"done": "end1"},
        },
    )
    lab.run(body)

    [extract] = lab.ran("extractFile1").files()
    assert extract["name"] == "people.csv"
    assert Path(extract["path"]).read_bytes().startswith(b"\xef\xbb\xbfemail,")
    assert read_csv(extract["path"], encoding="utf-8-sig") == [
        ["email", "first", "city", "opt-out"],
        ["a@example.com", "Ann", "Lyon", "false"],
        ["b@example.com", "Bob", "", "false"],
    ]


def test_header_labels_are_written_as_data_and_never_reach_the_sql(
    lab: Lab, tmp_path: Path
) -> None:
    labels = ["x'); DROP TABLE profile; --", '"; SELECT pg_sleep(10); --']
    columns = [{"name": labels[0], "field": "name"}, {"name": labels[1], "field": "n"}]
    lab.run(extract_flow(tmp_path, EXTRACT_FILE, columns=columns))

    [extract] = lab.ran("extractFile1").files()
    rows = read_csv(extract["path"])
    assert rows[0] == labels and rows[1] == ["Ann", "1"]
    assert lab.table_exists("profile")


def test_file_names_are_reduced_to_a_base_name_inside_the_task_folder(
    lab: Lab, tmp_path: Path
) -> None:
    body = extract_flow(
        tmp_path, EXTRACT_FILE, fileName="$(vars/fileName)", flow={"entry": "externalSignal"}
    )
    lab.start(body)
    lab.trigger("load", "entry1", {"fileName": "../../etc/passwd"})

    [extract] = lab.ran("extractFile1").files()
    path = Path(extract["path"])
    assert extract["name"] == "passwd" and path.name == "passwd"
    assert path.parent.parent.parent == lab.files
    assert path.resolve().is_relative_to(lab.files.resolve())
    assert len(read_csv(path)) == 8


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..", "default.csv"),
        ("a b/..\\c d.csv", "c_d.csv"),
        (".hidden.csv", "hidden.csv"),
        ("données.csv", "donn_es.csv"),
        (None, "None"),
    ],
)
def test_safe_file_names(value: Any, expected: str) -> None:
    assert csvload.safe_file_name(value, "default.csv") == expected


def test_extract_in_latin_1_fails_clearly_on_a_character_it_cannot_hold(
    lab: Lab, tmp_path: Path
) -> None:
    content = "name,vip,birth,seen,score,n\nZoë,,,,,\nŁukasz,,,,,\n"
    lab.run(extract_flow(tmp_path, content, encoding="latin-1"))

    done = lab.ran("extractFile1")
    assert done.state == "failed"
    assert "'Ł' cannot be written in latin-1: extract in utf-8 instead" in (done.error or "")
    assert not list(lab.files.rglob("*.csv*"))


def test_extract_in_latin_1_writes_latin_1(lab: Lab, tmp_path: Path) -> None:
    content = "name,vip,birth,seen,score,n\nZoë,,,,,\n"
    lab.run(extract_flow(tmp_path, content, encoding="latin-1", header=False))

    [extract] = lab.ran("extractFile1").files()
    assert Path(extract["path"]).read_bytes() == b"Zo\xeb,,,,,,2\n"


def test_extract_of_an_unknown_field_fails_naming_it(lab: Lab, tmp_path: Path) -> None:
    lab.run(extract_flow(tmp_path, EXTRACT_FILE, columns=[{"name": "x", "field": "email"}]))

    done = lab.ran("extractFile1")
    assert done.state == "failed"
    assert "columns[0]: 'email' is not a column of the population" in (done.error or "")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"columns": [{"name": "x"}]}, "columns[0] must be exactly {name, field}"),
        ({"columns": [{"name": "", "field": "a"}]}, "columns[0].name must be a header label"),
        ({"columns": [{"name": "x", "field": "a b"}]}, "columns[0].field must be a field"),
        ({"delimiter": ":"}, "option 'delimiter': must be one of"),
        ({"encoding": "utf-16"}, "'utf-16' is not ASCII-compatible"),
        ({"fileName": ""}, "option 'fileName': 1 to 255 characters"),
    ],
)
def test_bad_extract_options_are_refused_when_the_workflow_is_saved(
    lab: Lab, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(DefinitionError) as refused:
        lab.save(extract_flow(tmp_path, EXTRACT_FILE, **options))
    assert message in refused.value.message
