"""Targeting on populations: set operations, segmentation, dedup, enrichment, audiences."""
