"""Celery queue names: one per activity family, plus the control queue (commands, tick)."""

FAMILIES = ("flow", "targeting", "data", "channel", "human")
CONTROL_QUEUE = "carillon.control"
QUEUES = (*(f"carillon.{family}" for family in FAMILIES), CONTROL_QUEUE)
