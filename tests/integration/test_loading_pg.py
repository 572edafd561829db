"""loadFile, updateData and extractFile on real PostgreSQL: COPY in, set-based SQL, COPY out.

The behaviour tests of tests/unit/test_loading.py run here again, on PostgreSQL, where other
code does the work (the block path and COPY, data-modifying CTEs, COPY TO); each test works
in an organization of its own in the module's database.
"""

# ruff: noqa: F401  (the unit tests imported below are collected and run here on PostgreSQL)

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from tests.conftest import Harness
from tests.unit.test_loading import (
    TYPED,
    Lab,
    _copy_data,
    load_step,
    read_csv,
    test_a_header_in_another_order_is_loaded_in_that_order,
    test_a_key_repeated_in_the_input_takes_the_last_line_and_keyless_lines_are_skipped,
    test_a_population_of_profiles_is_deleted_by_id,
    test_batches_cover_every_input_record,
    test_extract_can_keep_formulas_and_skip_the_header,
    test_extract_in_latin_1_fails_clearly_on_a_character_it_cannot_hold,
    test_extract_in_latin_1_writes_latin_1,
    test_extract_of_profiles_joins_their_fields_in_the_organization,
    test_extract_writes_the_header_and_formatted_values_and_defuses_formulas,
    test_header_columns_match_by_name_in_any_order_and_extra_ones_are_ignored,
    test_header_labels_are_written_as_data_and_never_reach_the_sql,
    test_hostile_lines_are_rejected_one_by_one_and_formulas_are_kept_as_text,
    test_insert_update_and_delete_touch_only_what_they_should,
    test_latin_1_and_a_utf_8_byte_order_mark_are_read,
    test_load_types_every_column_and_rejects_bad_values_with_line_and_reason,
    test_more_rejects_than_max_errors_fail_the_load_and_leave_nothing,
    test_quoted_fields_keep_delimiters_quotes_and_newlines_and_line_numbers_stay_right,
    test_rejected_lines_go_to_the_reject_outlet_with_number_reason_and_raw_text,
    test_update_problems_fail_the_activity_and_write_nothing,
    test_upsert_by_crm_id_keeps_not_null_fields_when_the_input_has_no_value,
    test_upsert_updates_and_inserts_only_in_the_workflows_organization,
    test_without_a_header_fields_are_the_declared_columns_in_order,
    workflow,
    write,
)
from worker.marketing import profile, working_table

ROWS = 100_000


@pytest.fixture
def lab(pg_harness: Harness) -> Lab:
    return Lab(pg_harness, f"org{uuid.uuid4().hex[:12]}")


def _profiles_file(tmp_path: Path, rows: int, name: str = "profiles.csv") -> Path:
    lines = [
        f"C{i},user{i}@example.com,{1950 + i % 55}-{1 + i % 12:02d}-{1 + i % 28:02d},"
        f"{i % 10_000},{'yes' if i % 3 else 'no'}\n"
        for i in range(rows)
    ]
    return write(tmp_path, "crmId,email,birthDate,points,vip\n" + "".join(lines), name)


PROFILE_COLUMNS = [
    {"name": "crmId", "type": "string", "required": True},
    {"name": "email", "type": "string"},
    {"name": "birthDate", "type": "date"},
    {"name": "points", "type": "integer"},
    {"name": "vip", "type": "boolean"},
]


def test_copy_loads_100000_lines_into_an_unlogged_registered_working_table(
    lab: Lab, tmp_path: Path
) -> None:
    lab.run(workflow(_profiles_file(tmp_path, ROWS), load_step(PROFILE_COLUMNS)))

    loaded = lab.ran("loadFile1")
    assert loaded.state == "done", loaded.error
    assert loaded.messages() == ["100,000 line(s) loaded, 0 rejected"]
    name = loaded.population()["table"]
    with lab.harness.sessions() as s:
        persistence = s.execute(
            text("SELECT relpersistence FROM pg_class WHERE relname = :name"), {"name": name}
        ).scalar_one()
        registered = s.execute(
            select(working_table.c.count, working_table.c.resource).where(
                working_table.c.name == name
            )
        ).one()
    assert persistence == "u"
    assert tuple(registered) == (ROWS, "file")
    rows = lab.table_rows(name)
    assert len(rows) == ROWS
    assert rows[0][:4] == (2, "C0", "user0@example.com", rows[0][3])
    assert str(rows[0][3]) == "1950-01-01" and rows[0][4:] == (0, False)
    assert rows[-1][0] == ROWS + 1 and rows[-1][1] == f"C{ROWS - 1}"


def test_rejects_through_the_copy_path_keep_their_line_numbers(lab: Lab, tmp_path: Path) -> None:
    # Given 100,000 records with, here and there, a bad value, a quoted two-line record,
    # a blank line, a short line, and no newline at the very end
    records = [f"C{i},user{i}@example.com,1990-01-01,{i},no\n" for i in range(ROWS)]
    records[10] = "C10,user10@example.com,2021-02-30,10,no\n"
    records[50_000] = 'C50000,"two\nlines",1990-01-01,50000,no\n'
    records[60_000] = "\n" + records[60_000]
    records[77_777] = "C77777,short\n"
    records[-1] = records[-1].rstrip("\n")
    expected_ids, rejected, line = [], [], 2
    for index, record in enumerate(records):
        line += record.startswith("\n")
        (rejected if index in (10, 77_777) else expected_ids).append(line)
        line += record.lstrip("\n").count("\n")
    path = write(tmp_path, "crmId,email,birthDate,points,vip\n" + "".join(records))
    step = load_step(PROFILE_COLUMNS, transitions={"done": "end1", "reject": "end2"})

    # When it is loaded
    lab.run(workflow(path, step))

    # Then exactly the bad lines are rejected, and every record keeps its first line's number
    loaded = lab.ran("loadFile1")
    assert loaded.messages("warning") == [
        f"line {rejected[0]}: column 'birthDate': '2021-02-30' is not a date",
        f"line {rejected[1]}: expected 5 fields, found 2",
    ]
    assert loaded.messages("info") == ["99,998 line(s) loaded, 2 rejected"]
    rows = lab.table_rows(loaded.population()["table"])
    assert [row[0] for row in rows] == expected_ids
    assert rows[50_000 - 1][2] == "two\nlines"
    [reject_file] = loaded.files()
    assert read_csv(reject_file["path"])[1:] == [
        [str(rejected[0]), "column 'birthDate': '2021-02-30' is not a date", records[10][:-1]],
        [str(rejected[1]), "expected 5 fields, found 2", "C77777,short"],
    ]


PARITY_FILE = (
    "name,age,score,vip,birth,seen\n"
    "Ann,42,3.5,yes,1980-02-29,2021-03-04T05:06:07+02:00\n"
    "Bob,-7,1000,FALSE,2000-12-31,2021-03-04 05:06\n"
    "Cy,,,,,\n"
    "Kim,0012,-0.5,On,2024-02-29,2024-02-29\n"
    "Lu,1,2,n,2024-02-28,2024-02-28T23:59:59.123456Z\n"
)


def test_the_block_path_and_the_record_path_store_the_same_values(lab: Lab, tmp_path: Path) -> None:
    # Given the same lines, alone (read as one block) and after a quoted line (read line by line)
    columns = TYPED[:6]
    data, _rejects = _copy_data(PARITY_FILE.encode(), columns)
    assert data.startswith(b"2,Ann,42,3.5,yes,")  # as it is: the block path
    quoted = PARITY_FILE + '"Zed",1,1,1,,\n'

    # When both are loaded
    lab.run(workflow(write(tmp_path, PARITY_FILE, "block.csv"), load_step(columns)))
    lab.run(workflow(write(tmp_path, quoted, "lines.csv"), load_step(columns), wid="lines"))

    # Then they hold the same rows
    block, lines = (lab.table_rows(name) for name in lab.working_tables())
    assert lines[:-1] == block
    utc = lab.utc
    assert [row[:5] for row in block] == [
        (2, "Ann", 42, 3.5, True),
        (3, "Bob", -7, 1000.0, False),
        (4, "Cy", None, None, None),
        (5, "Kim", 12, -0.5, True),
        (6, "Lu", 1, 2.0, False),
    ]
    assert [row[6] for row in block] == [
        utc(2021, 3, 4, 3, 6, 7),
        utc(2021, 3, 4, 5, 6),
        None,
        utc(2024, 2, 29),
        utc(2024, 2, 28, 23, 59, 59, 123456),
    ]


@pytest.fixture
def new_york(pg_harness: Harness) -> Iterator[None]:
    """The database's default time zone is not UTC for the test's connections."""
    database = make_url(pg_harness.settings.database_url).database
    with pg_harness.db.connect() as connection:
        connection.execute(
            text(f"ALTER DATABASE \"{database}\" SET timezone TO 'America/New_York'")
        )
        connection.commit()
    pg_harness.db.dispose()
    try:
        yield
    finally:
        with pg_harness.db.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" RESET timezone'))
            connection.commit()
        pg_harness.db.dispose()


def test_datetimes_without_an_offset_are_utc_whatever_the_server_time_zone(
    lab: Lab, tmp_path: Path, new_york: None
) -> None:
    columns = [{"name": "name", "type": "string"}, {"name": "seen", "type": "datetime"}]
    plain = "name,seen\nA,2021-03-04 05:06\n"
    lab.run(workflow(write(tmp_path, plain, "block.csv"), load_step(columns)))
    quoted = plain + '"B",2021-03-04T05:06:00\n'
    lab.run(workflow(write(tmp_path, quoted, "lines.csv"), load_step(columns), wid="lines"))

    block, lines = (lab.table_rows(name) for name in lab.working_tables())
    assert block == [(2, "A", lab.utc(2021, 3, 4, 5, 6))]
    assert lines == [(2, "A", lab.utc(2021, 3, 4, 5, 6)), (3, "B", lab.utc(2021, 3, 4, 5, 6))]


def test_upsert_of_100000_rows_then_extract_them_with_copy(lab: Lab, tmp_path: Path) -> None:
    # Given 50,000 profiles of the organization (every even user), and 1,000 of the same
    # addresses in another organization
    acme, other = lab.org_id(), lab.org_id(lab.other)
    with lab.harness.sessions() as s, s.begin():
        for org, count in ((acme, ROWS // 2), (other, 1_000)):
            s.execute(
                text(
                    "INSERT INTO profile (org_id, email, first_name, created, last_modified) "
                    "SELECT :org, 'user' || g * 2 || '@example.com', 'Old', now(), now() "
                    "FROM generate_series(0, :last) AS g"
                ),
                {"org": org, "last": count - 1},
            )
    lines = "".join(f"user{i}@example.com,New{i}\n" for i in range(ROWS))
    path = write(tmp_path, "email,firstName\n" + lines)
    columns = [{"name": "email", "type": "string"}, {"name": "firstName", "type": "string"}]
    update = {
        "name": "updateData1",
        "type": "updateData",
        "operation": "upsert",
        "key": ["email"],
        "transitions": {"done": "extractFile1"},
    }
    extract = {
        "name": "extractFile1",
        "type": "extractFile",
        "columns": [{"name": "email", "field": "email"}, {"name": "first", "field": "firstName"}],
        "transitions": {"done": "end1"},
    }

    # When they are loaded, upserted by e-mail, and extracted
    lab.run(workflow(path, load_step(columns, then="updateData1"), update, extract))

    # Then half were updated, half inserted, the other organization untouched
    done = lab.ran("updateData1")
    assert done.state == "done", done.error
    assert done.messages() == ["50,000 record(s) inserted, 50,000 updated"]
    assert done.population()["count"] == ROWS
    with lab.harness.sessions() as s:
        counts = dict(
            s.execute(
                select(profile.c.org_id, func.count())
                .where(profile.c.org_id.in_([acme, other]), profile.c.firstName.like("New%"))
                .group_by(profile.c.org_id)
            ).all()
        )
    assert counts == {acme: ROWS}
    assert lab.profiles(other, "firstName") == [("Old",)] * 1_000
    extracted = lab.ran("extractFile1")
    assert extracted.messages() == ["100,000 record(s) extracted to extractFile1.csv"]
    rows = read_csv(extracted.files()[0]["path"])
    assert rows[0] == ["email", "first"] and len(rows) == ROWS + 1
    assert sorted(rows[1:])[:2] == [
        ["user0@example.com", "New0"],
        ["user10000@example.com", "New10000"],
    ]
