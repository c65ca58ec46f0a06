"""Policies: pure decisions from (snapshot, rule, state, now) to intended actions."""
