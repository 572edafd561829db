"""The technical workflows' SQL on real PostgreSQL: the unit tests again, one database each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Harness
from tests.integration.conftest import _postgres_database
from tests.unit.test_analytics import (
    sink,
    test_kpi_reconciliation_sends_only_what_differs,
    test_kpi_sharing_posts_changed_deliveries_to_the_connector,
    with_sink,
)
from tests.unit.test_archive import (
    test_a_crash_mid_archive_leaves_each_event_in_one_table,
    test_final_settled_events_are_archived_and_the_rest_stay,
)
from tests.unit.test_cleanup import (
    test_cleanup_keeps_its_own_run_and_a_second_run_purges_nothing_more,
    test_cleanup_purges_past_retention_and_keeps_live_and_recent_rows,
)
from tests.unit.test_event_status import (
    test_event_statuses_follow_their_logs_and_a_bounce_turns_processed_into_failed,
)
from tests.unit.test_indicators import (
    test_a_crash_between_reading_and_writing_the_pointer_replays_once,
    test_delivery_kpis_are_recounted_for_deliveries_whose_logs_changed,
    test_reporting_aggregates_are_per_day_and_channel_and_idempotent,
    test_tracking_indicators_add_each_log_once_across_runs,
)
from tests.unit.test_technical import (
    test_a_run_still_going_is_not_started_again_on_top_of_itself,
    test_a_slot_fires_once_even_when_two_beats_send_it,
)
from worker.config import Settings

__all__ = [
    "sink",
    "test_a_crash_between_reading_and_writing_the_pointer_replays_once",
    "test_a_crash_mid_archive_leaves_each_event_in_one_table",
    "test_a_run_still_going_is_not_started_again_on_top_of_itself",
    "test_a_slot_fires_once_even_when_two_beats_send_it",
    "test_cleanup_keeps_its_own_run_and_a_second_run_purges_nothing_more",
    "test_cleanup_purges_past_retention_and_keeps_live_and_recent_rows",
    "test_delivery_kpis_are_recounted_for_deliveries_whose_logs_changed",
    "test_event_statuses_follow_their_logs_and_a_bounce_turns_processed_into_failed",
    "test_final_settled_events_are_archived_and_the_rest_stay",
    "test_kpi_reconciliation_sends_only_what_differs",
    "test_kpi_sharing_posts_changed_deliveries_to_the_connector",
    "test_reporting_aggregates_are_per_day_and_channel_and_idempotent",
    "test_tracking_indicators_add_each_log_once_across_runs",
    "with_sink",
]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """The unit tests' harness on a fresh PostgreSQL database (they count every row)."""
    database = _postgres_database()
    url = next(database)
    settings = Settings(
        home=tmp_path,
        database_url=url,
        broker_url="memory://",
        result_backend="cache+memory://",
        signal_min_interval=0,
        lease_seconds=5,
        republish_seconds=1,
    ).resolved()
    built = Harness(settings)
    try:
        yield built
    finally:
        built.db.dispose()
        next(database, None)
