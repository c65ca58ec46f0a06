"""Hooks: the operator's commands and webhooks, run in the background when an alarm changes."""

from poolwatch.hooks.runner import HookEvent, HookResult, HookRunner

__all__ = ["HookEvent", "HookResult", "HookRunner"]
