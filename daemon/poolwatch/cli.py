"""The `poolwatch` command: flags, subcommands and exit codes.

This module turns a command line into a validated `Config` and hands it to the daemon; it never
touches libvirt, so `check-config` and `--help` work on machines without it.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import os
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from poolwatch import __version__, status
from poolwatch.config import (
    DEFAULT_LISTEN,
    DEFAULT_URI,
    FLAGS_SOURCE,
    Config,
    apply_flags,
    load_config,
    parse_duration,
)
from poolwatch.demo import DEMO_CONFIG
from poolwatch.errors import ConfigError, StartupError
from poolwatch.logsetup import configure_logging

DEFAULT_CONFIG_PATH = Path("/etc/poolwatch/poolwatch.toml")
DEMO_LISTEN = "127.0.0.1:9479"
DEFAULT_STATUS_TIMEOUT = "5s"


class ExitCode(enum.IntEnum):
    """poolwatch's exit statuses; systemd and scripts rely on them, so they never change."""

    OK = 0
    RUNTIME_ERROR = 1
    USAGE = 2
    CONFIG_INVALID = 3
    STARTUP_FAILED = 4
    UNREACHABLE = 5


_EXIT_CODE_HELP = {
    ExitCode.OK: "clean shutdown (SIGTERM, SIGINT), check-config found no problem, or status "
    "printed the table",
    ExitCode.RUNTIME_ERROR: "unexpected runtime error (logged with its traceback)",
    ExitCode.USAGE: "bad command line: unknown flag, missing or extra argument, or TLS files "
    "given to status that cannot be used",
    ExitCode.CONFIG_INVALID: "invalid configuration (file or flag values); every problem "
    "is listed on stderr",
    ExitCode.STARTUP_FAILED: "startup failed, e.g. the listen address cannot be bound",
    ExitCode.UNREACHABLE: "status: the daemon did not answer at --web.url (refused, timed "
    "out), or its answer was not poolwatch's pool API",
}
_EPILOG = "exit codes:\n" + "\n".join(
    textwrap.fill(text, 78, initial_indent=f"  {int(code)}  ", subsequent_indent="     ")
    for code, text in _EXIT_CODE_HELP.items()
)

_STATUS_COLUMNS_HELP = """\
columns:
  HOST         the host label with (up) or (down); a down host shows its last known pools
  POOL, TYPE, STATE
               as libvirt names them
  USAGE        fill bar and percentage; "-" for a stopped pool, whose figures are stale
  USED/SIZE    allocation/capacity in binary units (G is GiB)
  LEVEL        the threshold rule's alarm: ok, WARNING or CRITICAL
  FORECAST     time to full at the recent growth rate, e.g. 3h20m; "-" when not growing
  AUTOSTART    the autostart rule's mode (off, boot, enforce), "(N failed)" while
               retrying, "gave up" after max_attempts, "not mounted" while a
               require_mount target is not a mount point
  LAST ACTION  the last policy action on the pool and how long ago

"-" means that no rule applies or that nothing is known yet. Control characters in
names are printed escaped (\\n, \\x1b), so each pool stays on one line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `poolwatch` command line and return its exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args = parser.parse_args(_with_default_command(args_list))
    except SystemExit as exc:
        # argparse exits by itself for --help, --version and usage errors; main returns instead
        # so callers (tests, the console script) see one way out.
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return int(command(args))
    finally:
        _flush_std_streams()


def _flush_std_streams() -> None:
    """Flush stdout and stderr now, dropping what cannot be written.

    With stderr on a full disk or a closed pipe, the interpreter's own last flush would fail
    and turn the exit status into 120, whatever poolwatch returned; the log lines are lost
    either way (logsetup counts them), the exit status must not be.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
                stream.flush()  # what stayed buffered goes to /dev/null


def _with_default_command(argv: list[str]) -> list[str]:
    # `poolwatch --libvirt.uri test:///default` means `poolwatch run ...`, as for other
    # exporters whose flags follow the binary directly.
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        return ["run", *argv]
    return argv


# --- commands ---------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    config_path: Path | None = args.config_file
    if config_path is None and DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH

    def load() -> Config:
        config = Config() if config_path is None else load_config(config_path)
        config = _apply_flags(config, args, listen=args.listen, libvirt_uri=args.libvirt_uri)
        _check_web_config(config, args, config_path)
        return config

    try:
        config = load()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return ExitCode.CONFIG_INVALID
    configure_logging(level=config.log.level, fmt=config.log.format)
    if config_path is None:
        structlog.get_logger().info("config_file_absent", path=str(DEFAULT_CONFIG_PATH))
    return _serve(
        config,
        reload_config=None if config_path is None else load,
        demo=False,
        dry_run=args.dry_run,
    )


def _demo(args: argparse.Namespace) -> int:
    # Without a file of its own the demo runs its shipped rules, so that it shows the policies
    # at work and not only the pools.
    config_path: Path = args.config_file or DEMO_CONFIG

    def load() -> Config:
        config = load_config(config_path)
        listen = args.listen
        if listen is None and "listen" not in config.web.model_fields_set:
            # The demo serves made-up pools; keep it off the network unless asked otherwise.
            listen = [DEMO_LISTEN]
        config = _apply_flags(config, args, listen=listen, libvirt_uri=None)
        _check_web_config(config, args, config_path)
        # The daemon supplies the demo connection itself.
        return config.model_copy(update={"connections": ()})

    try:
        config = load()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return ExitCode.CONFIG_INVALID
    configure_logging(level=config.log.level, fmt=config.log.format)
    return _serve(
        config,
        reload_config=load,
        demo=True,
        dry_run=args.dry_run,
    )


def _check_config(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        config = load_config(path)
        _check_web_config(config, None, path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return ExitCode.CONFIG_INVALID
    print(f"{path}: OK ({_summary(config)})")
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    url: status.DaemonURL = args.web_url
    try:
        tls = status.tls_context(args.tls_ca_file, args.tls_cert_file, args.tls_key_file)
    except status.TlsSetupError as exc:
        print(f"poolwatch status: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        answer = status.fetch_pools(url, timeout=args.timeout, tls=tls)
        rows = status.parse_pools(answer, url=url)
    except status.StatusError as exc:
        print(f"poolwatch status: {exc}", file=sys.stderr)
        return ExitCode.UNREACHABLE
    table = status.render_table(rows, now=time.time())
    # Names are escaped to printable characters, but a terminal without UTF-8 could still not
    # encode every one of them; an escape beats a UnicodeEncodeError.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
    sys.stdout.write(table)
    return ExitCode.OK


def _web_url(text: str) -> status.DaemonURL:
    try:
        return status.daemon_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _timeout(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0 (got {text!r})")
    return seconds


def _summary(config: Config) -> str:
    """What the file sets up, so an operator sees that the rules they wrote were read."""
    counts = (
        (len(config.connections), "connection", "connections"),
        (len(config.autostart), "autostart rule", "autostart rules"),
        (len(config.thresholds), "threshold rule", "threshold rules"),
        (len(config.hooks), "hook", "hooks"),
    )
    return ", ".join(f"{n} {one if n == 1 else many}" for n, one, many in counts)


def _apply_flags(
    config: Config,
    args: argparse.Namespace,
    *,
    listen: list[str] | None,
    libvirt_uri: str | None,
) -> Config:
    # `listen` and `libvirt_uri` come apart from `args`: demo picks its own listen address and
    # never takes a libvirt URI.
    return apply_flags(
        config,
        listen=listen,
        web_config_file=args.web_config_file,
        log_level=args.log_level,
        log_format=args.log_format,
        libvirt_uri=libvirt_uri,
    )


def _check_web_config(
    config: Config, args: argparse.Namespace | None, config_path: Path | None
) -> None:
    """Read the web config file that `config` names, with every certificate and key it names, so
    that an unusable one stops check-config and the daemon with the config exit code."""
    path = config.web.config_file
    if path is None:
        return
    # Imported here: the web package pulls in aiohttp, which check-config does not otherwise need.
    from poolwatch.web.webconfig import WebConfigError, load_web_config

    try:
        load_web_config(Path(path))
    except WebConfigError as exc:
        from_flag = args is not None and bool(args.web_config_file)
        key = "--web.config.file" if from_flag else "web.config_file"
        source = FLAGS_SOURCE if from_flag or config_path is None else str(config_path)
        raise ConfigError(source, [f"{key}: {path}: {error}" for error in exc.errors]) from None


def _serve(
    config: Config, *, reload_config: Callable[[], Config] | None, demo: bool, dry_run: bool
) -> int:
    try:
        return _run_daemon(config, reload_config=reload_config, demo=demo, dry_run=dry_run)
    except StartupError as exc:
        print(f"poolwatch: cannot start: {exc}", file=sys.stderr)
        return ExitCode.STARTUP_FAILED
    except KeyboardInterrupt:
        # Ctrl-C before the daemon installed its own signal handlers is still a requested stop.
        return ExitCode.OK
    except Exception:
        structlog.get_logger().exception("daemon_failed")
        return ExitCode.RUNTIME_ERROR


def _run_daemon(
    config: Config, *, reload_config: Callable[[], Config] | None, demo: bool, dry_run: bool
) -> int:
    """Start the daemon; `reload_config` re-reads the file and re-applies the flags on SIGHUP,
    raising ConfigError when the result is invalid; `dry_run` logs policy actions instead of
    carrying them out."""
    # Imported late: the daemon pulls in libvirt and aiohttp, which check-config, --help and
    # --version do not need. Tests replace this function.
    from poolwatch.daemon import run_daemon

    return run_daemon(config, reload_config=reload_config, demo=demo, dry_run=dry_run)


# --- parser -----------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poolwatch",
        description=_paragraphs(
            "Watch libvirt storage pools and volumes and export them to Prometheus.",
            "Without a command, poolwatch runs the daemon: `poolwatch --libvirt.uri "
            "test:///default` is `poolwatch run --libvirt.uri test:///default`. "
            "See `poolwatch run --help` for the daemon's flags.",
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"poolwatch {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = _add_command(
        commands,
        "run",
        _run,
        summary="run the daemon (the default command)",
        description="Run the daemon: watch the configured libvirt connections and serve "
        "/metrics. Flags override the configuration file.",
    )
    _add_config_file_flag(
        run,
        f"TOML configuration file (default: {DEFAULT_CONFIG_PATH}; when that default is absent, "
        "built-in defaults apply, but a file given here must exist)",
    )
    _add_daemon_flags(run, listen_default=f"{DEFAULT_LISTEN}, all addresses")
    run.add_argument(
        "--libvirt.uri",
        dest="libvirt_uri",
        metavar="URI",
        help="watch this one libvirt connection instead of the [[connection]] list in the file, "
        "e.g. qemu:///system, qemu+ssh://root@kvm02/system, test:///default "
        f"(default: the file's connections, else {DEFAULT_URI})",
    )

    check = _add_command(
        commands,
        "check-config",
        _check_config,
        summary="validate a configuration file without running",
        description="Validate a configuration file: print 'FILE: OK' and what it sets up "
        "(connections, autostart and threshold rules, hooks) on stdout, or every problem with "
        "its key path on stderr.",
    )
    check.add_argument("file", type=Path, metavar="FILE", help="configuration file to validate")

    demo = _add_command(
        commands,
        "demo",
        _demo,
        summary="run the daemon on libvirt's embedded test driver with demo pools",
        description="Run the daemon against libvirt's embedded test driver with demo pools "
        "that fill over time, so every feature is visible without a hypervisor. Without "
        "--config.file it runs the demo's own rules (a threshold with a forecast, an "
        "autostart rule and a hook that logs: poolwatch/demo/demo.toml, an annotated "
        "example), which raise and clear an alarm, forecast a time to full and start a "
        "stopped pool again within two minutes. Any [[connection]] in the configuration file "
        "is ignored.",
    )
    _add_config_file_flag(
        demo, "TOML configuration file (default: the demo's own rules, poolwatch/demo/demo.toml)"
    )
    _add_daemon_flags(demo, listen_default=f"{DEMO_LISTEN} unless the file sets web.listen")

    status_command = _add_command(
        commands,
        "status",
        _status,
        summary="print a table of the pools a running daemon watches",
        description="Print the pools a running poolwatch daemon watches, read from its "
        "/api/v1/pools: one line per pool, sorted by host, then pool.",
    )
    status_command.description = f"{status_command.description}\n\n{_STATUS_COLUMNS_HELP}"
    status_command.add_argument(
        "--web.url",
        dest="web_url",
        type=_web_url,
        default=status.DEFAULT_URL,
        metavar="URL",
        help="where the daemon serves HTTP: http://HOST:PORT or https://HOST:PORT; for basic "
        "auth, http://USER:PASSWORD@HOST:PORT (note that other local users can read command "
        f"lines) (default: {status.DEFAULT_URL})",
    )
    status_command.add_argument(
        "--tls.ca-file",
        dest="tls_ca_file",
        metavar="FILE",
        help="for https: the CA certificate (PEM) that signed the daemon's certificate, when "
        "it is not in the system's trust store",
    )
    status_command.add_argument(
        "--tls.cert-file",
        dest="tls_cert_file",
        metavar="FILE",
        help="for https with client_auth_type set in the daemon's web config: this client's "
        "certificate (PEM; may hold the key too)",
    )
    status_command.add_argument(
        "--tls.key-file",
        dest="tls_key_file",
        metavar="FILE",
        help="the private key (PEM) of --tls.cert-file, when it is in a file of its own",
    )
    status_command.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_STATUS_TIMEOUT,
        metavar="DURATION",
        help="give up when the daemon has not answered within this long, e.g. 500ms, 5s, 1m "
        f"(default: {DEFAULT_STATUS_TIMEOUT})",
    )
    return parser


def _add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=_paragraphs(description),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(command=handler)
    return parser


def _paragraphs(*texts: str) -> str:
    # Raw formatting keeps the exit code table aligned, so descriptions are wrapped here.
    return "\n\n".join(textwrap.fill(text, 78) for text in texts)


def _add_config_file_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--config.file", dest="config_file", type=Path, metavar="PATH", help=help_text
    )


def _add_daemon_flags(parser: argparse.ArgumentParser, *, listen_default: str) -> None:
    # No argparse `choices`: values are checked by the config models, so a bad flag and a bad
    # file entry get the same message and the same exit code.
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        metavar="ADDR",
        help="address to serve /metrics on: host:port, [::1]:port or :port for all addresses; "
        f"repeat to listen on several; replaces web.listen (default: {listen_default})",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="web config file in Prometheus exporter-toolkit's format, e.g. the one "
        "node_exporter uses: TLS (tls_server_config), basic auth (basic_auth_users, bcrypt "
        "hashes) and response headers; re-read when it or a certificate it names changes; "
        '"" for none; replaces web.config_file (default: web.config_file from the file, else '
        "none: plain HTTP without authentication)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        metavar="LEVEL",
        help="only log events at this level or above: debug, info, warning, error "
        "(default: log.level from the file, else info)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        metavar="FORMAT",
        help="console (human-readable), json (one JSON object per line, for journald and log "
        "shippers) or auto (console on a terminal, json otherwise) "
        "(default: log.format from the file, else auto)",
    )
    parser.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="decide and log every policy action (pool starts, autostart flags, hooks) but "
        "carry none out",
    )
