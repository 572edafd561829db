"""Channels: message templates, connectors, and the never-twice sending of deliveries."""
