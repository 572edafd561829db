"""The technical workflows of seed 001: real workflows, fired by Celery beat once per slot."""
