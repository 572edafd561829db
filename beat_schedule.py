"""Default schedules of the technical workflows (seed 001), as data: read, never executed.

The engine's own tick is scheduled by worker/celery_app.py. The technical workflows
themselves are installed and driven by a later piece of work (issue 6); this table is the
contract they will follow. Times are UTC wall clock; `every` is a period.
"""

TECHNICAL_WORKFLOWS: dict[str, dict[str, object]] = {
    "abTesting": {"frequency": "daily", "times": ["00:00"]},
    "billing": {"frequency": "daily", "times": ["01:00"]},
    "cleanup": {"frequency": "daily", "times": ["04:00"]},
    "forecasting": {"frequency": "daily", "times": ["01:00"]},
    "importSharedAudience": {"frequency": "intraday", "every": "1h"},
    "reportSendingNow": {"frequency": "onDemand"},
    "kpiReconciliation": {"frequency": "daily", "times": ["04:20"]},
    "mobileAppOptOutMgt": {"frequency": "intraday", "every": "6h", "between": ["01:00", "24:00"]},
    "mcSynch_local": {"frequency": "intraday", "every": "1h"},
    "reportingAggregates": {"frequency": "daily", "times": ["02:00"]},
    "kpiSharing": {"frequency": "intraday", "every": "15mn"},
    "updateDeliveryExecInfo": {"frequency": "intraday", "every": "10mn"},
    "updateDeliveryIndicators": {"frequency": "intraday", "every": "1h"},
    "updateEventsStatus": {"frequency": "intraday", "every": "10mn"},
    "deliverabilityUpdate": {"frequency": "daily", "times": ["02:00"]},
}
