"""The configuration file's schema: its tables as frozen pydantic models, and `Config`.

A `Config` is validated in full: every problem in a file is reported at once, under its TOML key
path. Durations are float seconds and limits the policies' own values, so the rest of poolwatch
never parses strings; `threshold_rules()`, `autostart_rules()` and `hook_definitions()` hand the
policies plain frozen values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import (
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from poolwatch.addresses import without_credentials
from poolwatch.config.fields import (
    Array,
    ConnectionName,
    HookName,
    LibvirtURI,
    ListenAddress,
    Model,
    ReadOnlyValue,
    Table,
    WebConfigFile,
    custom_error,
    duration_at_least,
    pairs_as_dict,
    reraisable,
)
from poolwatch.config.messages import TOML, describe_errors, quote
from poolwatch.config.rules import AutostartConfig, HookConfig, ResumeConfig, ThresholdConfig
from poolwatch.errors import ConfigError
from poolwatch.policies.rules import AutostartRule, Hook, ResumeRule, ThresholdRule

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "console", "json"]

DEFAULT_URI = "qemu:///system"
DEFAULT_LISTEN = ":9479"

# The least a file may set in [poll], in seconds (refresh_interval may also be 0: off).
MIN_INTERVAL = 0.5
MIN_VOLUMES_INTERVAL = 1.0
MIN_REFRESH_INTERVAL = 1.0
MIN_CALL_TIMEOUT = 0.1


class ConnectionConfig(Model):
    """One libvirt connection (`[[connection]]`)."""

    name: ConnectionName | None = None
    uri: LibvirtURI = DEFAULT_URI
    read_only: ReadOnlyValue = "auto"

    @property
    def key(self) -> str:
        """What identifies this connection inside poolwatch (in logs, the API, /readyz): its
        name, else its URI without credentials."""
        return self.name if self.name is not None else without_credentials(self.uri)

    def wants_read_only(self, config: Config) -> bool:
        """Whether to open the connection read-only: "auto" asks for write access only when
        `config.needs_write()`."""
        if self.read_only != "auto":
            return self.read_only
        return not config.needs_write()


class PollConfig(Model):
    """How often poolwatch asks libvirt (`[poll]`); durations in seconds."""

    # The minimums apply to the file (see config/poolwatch.toml): every timer waits its interval
    # after the previous poll ended, so polls never overlap and these bound the rate.
    interval: Annotated[float, duration_at_least(MIN_INTERVAL)] = 15.0
    volumes_interval: Annotated[float, duration_at_least(MIN_VOLUMES_INTERVAL)] = 60.0
    refresh_interval: Annotated[float, duration_at_least(MIN_REFRESH_INTERVAL, allow_zero=True)] = (
        300.0
    )
    call_timeout: Annotated[float, duration_at_least(MIN_CALL_TIMEOUT)] = 10.0
    max_volumes_per_pool: int = Field(default=1000, ge=0)
    # Full reads through libvirt of the pools on the local fast path; 0 disables them.
    sweep_interval: Annotated[float, duration_at_least(MIN_REFRESH_INTERVAL, allow_zero=True)] = (
        900.0
    )


class WebConfig(Model):
    """The HTTP listener (`[web]`)."""

    listen: Annotated[Array[ListenAddress], Field(min_length=1)] = (DEFAULT_LISTEN,)
    # A web config file in Prometheus exporter-toolkit's format (TLS, basic auth, headers). Only
    # its path is checked here: the web layer reads the file and the certificates it names
    # (check-config and the daemon start do so before anything else runs).
    config_file: WebConfigFile | None = None


class LogConfig(Model):
    """Logging (`[log]`)."""

    level: LogLevel = "info"
    format: LogFormat = "auto"


class Config(Model):
    """The whole configuration file."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    # The TOML key is singular because each [[connection]] table is one connection.
    connections: Array[ConnectionConfig] = Field(
        default=(ConnectionConfig(),), validation_alias="connection"
    )
    poll: PollConfig = Field(default_factory=PollConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    # In file order: the first matching rule applies.
    autostart: Array[AutostartConfig] = ()
    thresholds: Array[ThresholdConfig] = Field(default=(), validation_alias="threshold")
    resume: Array[ResumeConfig] = ()
    hooks: Table[HookName, HookConfig] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _hooks_are_defined(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # Checked on the raw input, so unknown hook names are reported together with every
        # other problem in the file, not only once the rest is valid.
        unknown = _unknown_hook_references(data)
        try:
            config = handler(data)
        except ValidationError as exc:
            if not unknown:
                raise
            errors = [reraisable(error) for error in exc.errors(include_url=False)]
            raise ValidationError.from_exception_data(cls.__name__, errors + unknown) from None
        if unknown:
            raise ValidationError.from_exception_data(cls.__name__, unknown)
        return config

    @field_validator("connections")
    @classmethod
    def _connection_keys_unique(
        cls, connections: tuple[ConnectionConfig, ...]
    ) -> tuple[ConnectionConfig, ...]:
        first_index: dict[str, int] = {}
        duplicates: list[InitErrorDetails] = []
        for index, connection in enumerate(connections):
            first = first_index.setdefault(connection.key, index)
            if first == index:
                continue
            if connection.name is not None:
                field, message = (
                    "name",
                    "duplicate connection name {value} (see connection[{first}])",
                )
            else:
                field = "uri"
                message = (
                    "duplicate uri {value} (see connection[{first}]); "
                    "give connections to the same URI distinct names"
                )
            duplicates.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "duplicate_connection",
                        message,
                        {"value": quote(connection.key), "first": first},
                    ),
                    loc=(index, field),
                    input=connection.key,
                )
            )
        if duplicates:
            # Raising a ValidationError from a validator nests its locations under this field,
            # which reports every duplicate at its own key path.
            raise ValidationError.from_exception_data(cls.__name__, duplicates)
        return connections

    def needs_write(self) -> bool:
        """Whether poolwatch writes to libvirt: refreshing pools, an autostart rule that starts
        pools or sets their autostart flag, or a resume rule that resumes or destroys guests.
        read_only = "auto" connections follow it."""
        return (
            self.poll.refresh_interval > 0
            or any(rule.writes for rule in self.autostart)
            or any(rule.writes for rule in self.resume)
        )

    def threshold_rules(self) -> tuple[ThresholdRule, ...]:
        """The `[[threshold]]` rules in file order (the first matching rule applies)."""
        return tuple(threshold.to_rule() for threshold in self.thresholds)

    def autostart_rules(self) -> tuple[AutostartRule, ...]:
        """The `[[autostart]]` rules in file order (the first matching rule applies)."""
        return tuple(rule.to_rule() for rule in self.autostart)

    def resume_rules(self) -> tuple[ResumeRule, ...]:
        """The `[[resume]]` rules in file order (the first rule matching pool and guest applies)."""
        return tuple(rule.to_rule() for rule in self.resume)

    def hook_definitions(self) -> dict[str, Hook]:
        """The `[hooks.NAME]` tables by name."""
        return {name: hook.to_hook(name) for name, hook in self.hooks}

    def with_overrides(
        self,
        *,
        listen: Sequence[str] | None = None,
        web_config_file: str | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
        libvirt_uri: str | None = None,
        source: str = "overrides",
    ) -> Config:
        """A new config with these values replaced (None keeps the current one), validated by the
        same rules as the file; `libvirt_uri` replaces all connections with one unnamed one, and
        `web_config_file=""` removes the web config file."""
        # The policy sections go back in as the validated models they are: flags never change
        # them, and their dump is not TOML (`for` is dumped as `hold`).
        data = self.model_dump(exclude={"autostart", "thresholds", "resume", "hooks"})
        data.update(
            autostart=self.autostart,
            threshold=self.thresholds,
            resume=self.resume,
            hooks=self.hooks,
        )
        if listen is not None:
            data["web"]["listen"] = list(listen)
        if web_config_file is not None:
            data["web"]["config_file"] = web_config_file or None
        if log_level is not None:
            data["log"]["level"] = log_level
        if log_format is not None:
            data["log"]["format"] = log_format
        # Validating under the TOML key makes error paths read as they would for the file.
        data["connection"] = data.pop("connections")
        if libvirt_uri is not None:
            data["connection"] = [{"uri": libvirt_uri}]
        try:
            return Config.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(source, describe_errors(exc, TOML)) from None


def _unknown_hook_references(data: Any) -> list[InitErrorDetails]:
    """Errors for rules that name a hook without a [hooks.NAME] table, from unvalidated input."""
    if not isinstance(data, Mapping):
        return []
    hooks = pairs_as_dict(data.get("hooks", {}))
    if not isinstance(hooks, Mapping):
        return []  # reported as "must be a table"
    defined = sorted(str(name) for name in hooks)
    known = ", ".join(defined) if defined else "none"
    errors: list[InitErrorDetails] = []
    for section in ("autostart", "threshold", "thresholds", "resume"):
        rules = data.get(section)
        if not isinstance(rules, list | tuple):
            continue
        for index, rule in enumerate(rules):
            if isinstance(rule, AutostartConfig | ThresholdConfig | ResumeConfig):
                names: Any = rule.hooks
            elif isinstance(rule, Mapping):
                names = rule.get("hooks")
            else:
                continue
            if not isinstance(names, list | tuple):
                continue
            errors.extend(
                custom_error(
                    "hook_reference",
                    f"unknown hook {quote(name)} (defined: {known})",
                    loc=(section, index, "hooks", position),
                    input=name,
                )
                for position, name in enumerate(names)
                if isinstance(name, str) and name not in hooks
            )
    return errors
