"""Hooks: the operator's commands and webhooks, run in the background when an alarm changes."""

from poolwatch.hooks.event import HookEvent, HookResult, ResultCallback
from poolwatch.hooks.runner import HookRunner

__all__ = ["HookEvent", "HookResult", "HookRunner", "ResultCallback"]
