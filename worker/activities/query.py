"""Targeting: the query activity (filter DSL on a resource, result and complement outlets)."""
