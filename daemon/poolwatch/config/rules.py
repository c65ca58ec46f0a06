"""The policy sections of the config: `[[autostart]]`, `[[threshold]]` and `[[resume]]` rules and
`[hooks.NAME]`.

Each model checks what spans its keys (critical beyond warning, backoff_max not below backoff,
exec or webhook) and turns into the policies' own frozen rule value with `to_rule()` or
`to_hook()`, which know nothing of TOML or pydantic.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from poolwatch.config.fields import (
    ClearValue,
    ExecArgv,
    FreeAboveValue,
    Glob,
    HeaderName,
    HeaderValue,
    HookReferences,
    LimitValue,
    Model,
    NonNegativeDuration,
    PositiveDuration,
    Table,
    WebhookURL,
    custom_error,
)
from poolwatch.config.messages import quote
from poolwatch.config.units import Hysteresis, format_clear, format_duration, format_limit
from poolwatch.policies.rules import (
    AutostartMode,
    AutostartRule,
    ExecHook,
    FreeBelow,
    Hook,
    Limit,
    ResumeAction,
    ResumeRule,
    Selector,
    ThresholdRule,
    UsedRatio,
    WebhookHook,
)

# Defaults that depend on other keys, so the models cannot state them as field defaults.
DEFAULT_CLEAR_RATIO = 0.02
DEFAULT_CLEAR_BYTES = 2**30
DEFAULT_EXEC_TIMEOUT = 30.0
DEFAULT_WEBHOOK_TIMEOUT = 10.0


class AutostartConfig(Model):
    """One `[[autostart]]` rule: which pools poolwatch starts, and how it retries."""

    pool: Glob = "*"
    type: Glob | None = None
    mode: Literal["off", "boot", "enforce"] = "boot"
    ensure_flag: bool = False
    require_mount: bool = False
    max_attempts: int = Field(default=10, ge=0)
    backoff: PositiveDuration = 10.0
    backoff_max: PositiveDuration = 600.0
    hooks: HookReferences = ()

    # Checks across keys are field validators, reading the keys validated before them from
    # info.data (a key that failed is absent there), so they report with every other error.

    @field_validator("require_mount")
    @classmethod
    def _only_dir_pools_mount(cls, require_mount: bool, info: ValidationInfo) -> bool:
        pool_type = info.data.get("type")
        if require_mount and pool_type is not None and not fnmatch.fnmatchcase("dir", pool_type):
            raise PydanticCustomError(
                "inconsistent",
                'only applies to dir pools, and type {type} does not match "dir"',
                {"type": quote(pool_type)},
            )
        return require_mount

    @field_validator("backoff_max")
    @classmethod
    def _backoff_max_not_below_backoff(cls, backoff_max: float, info: ValidationInfo) -> float:
        backoff = info.data.get("backoff")
        if backoff is not None and backoff_max < backoff:
            raise PydanticCustomError(
                "inconsistent",
                "must be at least backoff {backoff} (got {value})",
                {
                    "backoff": quote(format_duration(backoff)),
                    "value": quote(format_duration(backoff_max)),
                },
            )
        return backoff_max

    @model_validator(mode="after")
    def _backoff_within_default_max(self) -> Self:
        # Defaults are not validated, so _backoff_max_not_below_backoff misses this case.
        if "backoff_max" not in self.model_fields_set and self.backoff > self.backoff_max:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    custom_error(
                        "inconsistent",
                        "must be at most backoff_max, whose default is "
                        f"{quote(format_duration(self.backoff_max))}: set backoff_max too "
                        f"(got {quote(format_duration(self.backoff))})",
                        loc=("backoff",),
                        input=self.backoff,
                    )
                ],
            )
        return self

    @property
    def writes(self) -> bool:
        """Whether this rule may change libvirt (start pools, set autostart flags)."""
        return self.mode != "off" or self.ensure_flag

    def to_rule(self) -> AutostartRule:
        return AutostartRule(
            selector=Selector(self.pool, self.type),
            mode=AutostartMode(self.mode),
            ensure_flag=self.ensure_flag,
            require_mount=self.require_mount,
            max_attempts=self.max_attempts,
            backoff_initial=self.backoff,
            backoff_max=self.backoff_max,
            hooks=self.hooks,
        )


class ThresholdConfig(Model):
    """One `[[threshold]]` rule: the space levels of the pools it selects."""

    pool: Glob = "*"
    type: Glob | None = None
    warning: LimitValue | None = None
    critical: LimitValue | None = None
    clear: ClearValue | None = None
    # `for` is a Python keyword; the field says what it is: how long a level must hold.
    hold: NonNegativeDuration = Field(default=0.0, alias="for")
    time_to_full_warning: PositiveDuration | None = None
    time_to_full_critical: PositiveDuration | None = None
    forecast_window: PositiveDuration = 6 * 3600.0
    hooks: HookReferences = ()

    # Checks across keys are field validators, reading the keys validated before them from
    # info.data (a key that failed is absent there), so they report with every other error.

    @field_validator("critical")
    @classmethod
    def _critical_beyond_warning(cls, critical: Limit | None, info: ValidationInfo) -> Limit | None:
        warning = info.data.get("warning")
        if isinstance(warning, UsedRatio) and isinstance(critical, UsedRatio):
            if critical.ratio > warning.ratio:
                return critical
            message = "must be higher than warning {warning} (got {value})"
        elif isinstance(warning, FreeBelow) and isinstance(critical, FreeBelow):
            if critical.bytes < warning.bytes:
                return critical
            message = (
                "must be less free space than warning {warning}, which warns first (got {value})"
            )
        else:
            # No warning, or one of the other kind: a used-ratio warning with a free-space
            # critical has no order to check. Each level compares its own figure, and a
            # free-space critical is what fires before guests pause on a filesystem with
            # root-reserved blocks.
            return critical
        raise PydanticCustomError(
            "inconsistent",
            message,
            {"warning": quote(format_limit(warning)), "value": quote(format_limit(critical))},
        )

    @field_validator("clear")
    @classmethod
    def _clear_fits_the_limits(
        cls, clear: Hysteresis | None, info: ValidationInfo
    ) -> Hysteresis | None:
        # A clear margin applies to the limits of its kind (the other kind keeps its default).
        # When a limit is invalid, its own error says what to fix first.
        if clear is None or "warning" not in info.data:
            return clear
        warning = info.data["warning"]
        if warning is None and "critical" not in info.data:
            return clear
        named = [("warning", warning), ("critical", info.data.get("critical"))]
        limits = [(name, limit) for name, limit in named if limit is not None]
        ratios = [(name, limit) for name, limit in limits if isinstance(limit, UsedRatio)]
        context = {"value": quote(format_clear(clear))}
        if not limits:
            message = "has no effect without warning or critical (got {value})"
        elif clear.ratio == 0:
            if len(ratios) < len(limits):
                return clear
            message = 'must be a ratio such as "2%" for used-ratio limits (got {value})'
        elif not ratios:
            message = 'must be a size such as "5GiB" for free-space limits (got {value})'
        elif clear.ratio >= ratios[0][1].ratio:
            # The level would clear only below 0% used: never. The first ratio is the lowest.
            message = (
                "must be less than {name} {limit}: a clear of {value} reaches beyond the "
                "threshold, so the level would never clear"
            )
            context["name"] = ratios[0][0]
            context["limit"] = quote(format_limit(ratios[0][1]))
        else:
            return clear
        raise PydanticCustomError("inconsistent", message, context)

    @field_validator("time_to_full_critical")
    @classmethod
    def _critical_forecast_sooner(
        cls, critical: float | None, info: ValidationInfo
    ) -> float | None:
        warning = info.data.get("time_to_full_warning")
        if warning is not None and critical is not None and critical >= warning:
            raise PydanticCustomError(
                "inconsistent",
                "must be shorter than time_to_full_warning {warning} (got {value})",
                {
                    "warning": quote(format_duration(warning)),
                    "value": quote(format_duration(critical)),
                },
            )
        return critical

    @model_validator(mode="after")
    def _sets_a_level(self) -> Self:
        levels = (
            self.warning,
            self.critical,
            self.time_to_full_warning,
            self.time_to_full_critical,
        )
        if all(level is None for level in levels):
            raise PydanticCustomError(
                "inconsistent",
                "sets no level: give at least one of warning, critical, time_to_full_warning "
                "or time_to_full_critical",
            )
        return self

    def to_rule(self) -> ThresholdRule:
        clear_ratio, clear_bytes = 0.0, 0
        clear = self.clear or Hysteresis()
        limits = (self.warning, self.critical)
        if any(isinstance(limit, UsedRatio) for limit in limits):
            clear_ratio = clear.ratio or DEFAULT_CLEAR_RATIO
        if any(isinstance(limit, FreeBelow) for limit in limits):
            clear_bytes = clear.bytes or DEFAULT_CLEAR_BYTES
        return ThresholdRule(
            selector=Selector(self.pool, self.type),
            warning=self.warning,
            critical=self.critical,
            clear_ratio=clear_ratio,
            clear_bytes=clear_bytes,
            hold=self.hold,
            time_to_full_warning=self.time_to_full_warning,
            time_to_full_critical=self.time_to_full_critical,
            forecast_window=self.forecast_window,
            hooks=self.hooks,
        )


class ResumeConfig(Model):
    """One `[[resume]]` rule: what becomes of guests that a full pool paused."""

    pool: Glob = "*"
    type: Glob | None = None
    guest: Glob = "*"
    # "leave" by default: poolwatch resumes or destroys guests only where a rule says so.
    action: Literal["resume", "leave", "kill"] = "leave"
    free_above: FreeAboveValue = 2**30  # "> 1GiB"
    delay: NonNegativeDuration = 30.0
    window: NonNegativeDuration = 600.0
    hooks: HookReferences = ()

    @property
    def writes(self) -> bool:
        """Whether this rule may change libvirt (resume or destroy guests)."""
        return self.action != "leave"

    def to_rule(self) -> ResumeRule:
        return ResumeRule(
            selector=Selector(self.pool, self.type),
            guest=self.guest,
            action=ResumeAction(self.action),
            free_above=self.free_above,
            delay=self.delay,
            window=self.window,
            hooks=self.hooks,
        )


class HookConfig(Model):
    """One `[hooks.NAME]` table: a command to run or a URL to post to."""

    exec: ExecArgv | None = None
    webhook: WebhookURL | None = None
    # None: DEFAULT_EXEC_TIMEOUT or DEFAULT_WEBHOOK_TIMEOUT, by kind.
    timeout: PositiveDuration | None = None
    retries: int = Field(default=3, ge=0)
    # Often a credential (Authorization), so kept out of repr() and with it out of logs.
    headers: Table[HeaderName, HeaderValue] = Field(default=(), repr=False)

    @field_validator("retries", "headers")
    @classmethod
    def _webhook_only(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs only for keys the file sets; defaults are not validated.
        if (
            info.data.get("exec") is not None
            and "webhook" in info.data
            and info.data["webhook"] is None
        ):
            raise PydanticCustomError("inconsistent", "only applies to webhook hooks")
        return value

    @model_validator(mode="after")
    def _exec_or_webhook(self) -> Self:
        if self.exec is None and self.webhook is None:
            raise PydanticCustomError(
                "inconsistent", "needs exec (a command to run) or webhook (a URL to post to)"
            )
        if self.exec is not None and self.webhook is not None:
            raise PydanticCustomError(
                "inconsistent",
                "has both exec and webhook; a hook is one or the other, so define two hooks",
            )
        return self

    def to_hook(self, name: str) -> Hook:
        if self.exec is not None:
            timeout = DEFAULT_EXEC_TIMEOUT if self.timeout is None else self.timeout
            return ExecHook(name=name, argv=self.exec, timeout=timeout)
        assert self.webhook is not None  # _exec_or_webhook guarantees it
        return WebhookHook(
            name=name,
            url=self.webhook,
            timeout=DEFAULT_WEBHOOK_TIMEOUT if self.timeout is None else self.timeout,
            retries=self.retries,
            headers=self.headers,
        )
