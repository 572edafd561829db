"""Celery queue names: one per activity family, plus the control queue (commands, tick)."""

FAMILIES = ("flow", "targeting", "data", "channel", "human")
CONTROL_QUEUE = "carillon.control"
#: The channel family's second queue: batches of one delivery, sent by any pool process.
BATCH_QUEUE = "carillon.channel.batch"
QUEUES = (*(f"carillon.{family}" for family in FAMILIES), BATCH_QUEUE, CONTROL_QUEUE)
