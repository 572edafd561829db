"""The baseline of bench/api_trigger.py: the smallest Flask endpoint that reads a JSON body."""

from __future__ import annotations

from typing import Any

from flask import Flask, request

app = Flask(__name__)


@app.post("/trigger")
def trigger() -> tuple[dict[str, Any], int]:
    body = request.get_json()
    return {"source": body.get("source"), "state": "accepted"}, 202
