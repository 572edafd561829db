"""Twenty callers triggering one signal at the same instant: exactly one is accepted."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from tests import api_conftest
from tests.api_conftest import SIGNAL_WORKFLOW, Rest

# The fixtures `make_rest` and `rest`, shared by the API tests.
make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

CALLERS = 20


def test_twenty_simultaneous_triggers_give_one_202_and_nineteen_429(
    make_rest: Callable[..., Rest],
) -> None:
    # Given one app, a started signal workflow and a 600 s minimum interval
    rest = make_rest(signal_min_interval=600)
    rest.start(SIGNAL_WORKFLOW)
    path = rest.trigger_path("sig")
    barrier = threading.Barrier(CALLERS)
    statuses: list[int] = []
    retry_after: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        client = rest.app.test_client()  # each thread its own client
        barrier.wait()
        response = client.post(path, json={"source": "race"}, headers=rest.headers)
        with lock:
            statuses.append(response.status_code)
            if response.status_code == 429:
                retry_after.append(response.headers["Retry-After"])

    # When they all post at once
    threads = [threading.Thread(target=call) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # Then exactly one trigger was accepted, and one job started
    assert Counter(statuses) == {202: 1, 429: CALLERS - 1}
    assert all(0 < int(value) <= 600 for value in retry_after)
    assert rest.rows()["Trigger"] == 1
    assert rest.rows()["Job"] == 2  # the start's and the trigger's
