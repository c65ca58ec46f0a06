"""Log context never uses structlog's own keys: read from the source of every log call in the
package (its keyword arguments and the keys of the dicts it splats), so that a `level=` meaning
something other than the severity cannot come back; and what an operator reads when a pool's
threshold level changes."""

from __future__ import annotations

import ast
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog

from poolwatch.actuator.context import PolicyState, PoolContext
from poolwatch.actuator.evaluation import measure, thresholds
from poolwatch.logsetup import FLAG_KEYS, RESERVED_KEYS, configure_logging
from poolwatch.model import HostSnapshot
from poolwatch.policies.rules import Selector, ThresholdRule, UsedRatio
from tests.unit.factories import GIB, HOST_A, NOW, URI_A, pool

PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "poolwatch"
# The methods of a structlog logger that take context as keyword arguments.
METHODS = frozenset(
    {"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg"}
    | {"bind", "new"}
)
LOGGER_NAMES = frozenset({"log", "_log", "logger"})  # what the package calls its loggers

Scope = ast.Module | ast.FunctionDef | ast.AsyncFunctionDef


class Unresolved(Exception):
    """A splatted mapping whose keys the scan cannot read from the source."""


@dataclass
class _Module:
    name: str  # the path shown in messages, e.g. poolwatch/hooks/runner.py
    tree: ast.Module
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    aliases: set[str] = field(default_factory=set)  # names bound to a logger method

    def scope(self, node: ast.AST) -> Scope:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return node
        return self.tree

    def where(self, node: ast.expr | ast.stmt) -> str:
        return f"{self.name}:{node.lineno}"


@dataclass(frozen=True)
class LogCall:
    where: str
    event: str | None  # None: bind(), or a name computed at run time
    keys: frozenset[str]
    misused_flags: frozenset[str]  # exc_info/stack_info passed as anything but True


def _is_logger(node: ast.expr) -> bool:
    if isinstance(node, ast.Name | ast.Attribute):
        return (node.id if isinstance(node, ast.Name) else node.attr) in LOGGER_NAMES
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "get_logger":
            return True
        return node.func.attr in ("bind", "new") and _is_logger(node.func.value)
    return False


def _is_method(node: ast.expr, aliases: set[str]) -> bool:
    """`log.info`, `self._log.warning`, `(log.info if ok else log.warning)`, or an alias."""
    if isinstance(node, ast.Attribute):
        return node.attr in METHODS and _is_logger(node.value)
    if isinstance(node, ast.IfExp):
        return _is_method(node.body, aliases) or _is_method(node.orelse, aliases)
    return isinstance(node, ast.Name) and node.id in aliases


def _params(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    names = [arg.arg for arg in (*function.args.posonlyargs, *function.args.args)]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


class Package:
    """Every module of the package, parsed, with what the scan needs to follow values around."""

    def __init__(self, root: Path) -> None:
        self.modules = [
            _Module(str(path.relative_to(root.parent)), ast.parse(path.read_text()))
            for path in sorted(root.rglob("*.py"))
        ]
        self.functions: dict[str, list[tuple[_Module, ast.FunctionDef | ast.AsyncFunctionDef]]]
        self.functions = {}
        self.calls: dict[str, list[tuple[_Module, ast.Call]]] = {}
        for module in self.modules:
            for node in ast.walk(module.tree):
                for child in ast.iter_child_nodes(node):
                    module.parents[child] = node
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    self.functions.setdefault(node.name, []).append((module, node))
                elif isinstance(node, ast.Call) and (name := _called_name(node)) is not None:
                    self.calls.setdefault(name, []).append((module, node))
        for _ in range(3):  # an alias handed on through a parameter, and on again
            for module in self.modules:
                self._find_aliases(module)

    def _find_aliases(self, module: _Module) -> None:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Assign) and _is_method(node.value, module.aliases):
                module.aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                for callee_module, function in self.functions.get(node.func.id, []):
                    params = _params(function)
                    for index, arg in enumerate(node.args[: len(params)]):
                        if _is_method(arg, module.aliases):
                            callee_module.aliases.add(params[index])
                    for keyword in node.keywords:
                        if keyword.arg and _is_method(keyword.value, module.aliases):
                            callee_module.aliases.add(keyword.arg)

    def log_calls(self) -> Iterator[LogCall]:
        for module in self.modules:
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Call) and _is_method(node.func, module.aliases):
                    yield self._log_call(module, node)

    def _log_call(self, module: _Module, call: ast.Call) -> LogCall:
        first = call.args[0] if call.args else None
        event = first.value if isinstance(first, ast.Constant) else None
        keys: set[str] = set()
        misused: set[str] = set()
        for keyword in call.keywords:
            if keyword.arg is None:
                splatted = self.keys(keyword.value, module, module.scope(call))
                keys |= splatted
                misused |= splatted & FLAG_KEYS
            elif keyword.arg in FLAG_KEYS:
                value = keyword.value
                if not (isinstance(value, ast.Constant) and value.value is True):
                    misused.add(keyword.arg)
            else:
                keys.add(keyword.arg)
        return LogCall(module.where(call), event, frozenset(keys), frozenset(misused))

    def keys(self, expr: ast.expr, module: _Module, scope: Scope) -> frozenset[str]:
        """The keys of the mapping `expr` evaluates to, as far as the source says."""
        if isinstance(expr, ast.Dict):
            keys: set[str] = set()
            for key, value in zip(expr.keys, expr.values, strict=True):
                if key is None:
                    keys |= self.keys(value, module, scope)
                elif isinstance(key, ast.Constant) and isinstance(key.value, str):
                    keys.add(key.value)
                else:
                    raise Unresolved(module.where(expr))
            return frozenset(keys)
        if isinstance(expr, ast.IfExp):
            return self.keys(expr.body, module, scope) | self.keys(expr.orelse, module, scope)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
            return self.keys(expr.left, module, scope) | self.keys(expr.right, module, scope)
        if isinstance(expr, ast.Call) and (name := _called_name(expr)) is not None:
            if name == "dict" and not expr.args:
                return frozenset(k.arg for k in expr.keywords if k.arg is not None)
            return self._returned_keys(name, expr, module)
        if isinstance(expr, ast.Name):
            if not isinstance(scope, ast.Module) and expr.id in _params(scope):
                return self._passed_keys(scope, expr.id)
            return self._assigned_keys(expr.id, module, scope)
        raise Unresolved(module.where(expr))

    def _returned_keys(self, name: str, expr: ast.Call, module: _Module) -> frozenset[str]:
        functions = self.functions.get(name)
        if not functions:
            raise Unresolved(f"{module.where(expr)}: {name}() is not the package's")
        keys: set[str] = set()
        for callee_module, function in functions:
            for node in ast.walk(function):
                if isinstance(node, ast.Return) and node.value is not None:
                    keys |= self.keys(node.value, callee_module, function)
        return frozenset(keys)

    def _passed_keys(
        self, function: ast.FunctionDef | ast.AsyncFunctionDef, param: str
    ) -> frozenset[str]:
        index = _params(function).index(param)
        keys: set[str] = set()
        found = False
        for module, call in self.calls.get(function.name, []):
            passed = [k.value for k in call.keywords if k.arg == param]
            passed += call.args[index : index + 1]
            for value in passed:
                keys |= self.keys(value, module, module.scope(call))
                found = True
        if not found:
            raise Unresolved(f"no call of {function.name}() in the package passes {param}")
        return frozenset(keys)

    def _assigned_keys(self, name: str, module: _Module, scope: Scope) -> frozenset[str]:
        keys: set[str] = set()
        found = False
        for node in ast.walk(scope):
            if module.scope(node) is not scope and node is not scope:
                continue  # a nested function's own variable of the same name
            values: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == name:
                        values.append(node.value)
                    elif (
                        isinstance(target, ast.Subscript)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == name
                    ):
                        if not isinstance(target.slice, ast.Constant):
                            raise Unresolved(module.where(node))
                        keys.add(str(target.slice.value))
                        found = True
            elif isinstance(node, ast.AnnAssign | ast.AugAssign) and node.value is not None:
                target = node.target
                if isinstance(target, ast.Name) and target.id == name:
                    values.append(node.value)
            for value in values:
                keys |= self.keys(value, module, scope)
                found = True
        if not found:
            raise Unresolved(f"{module.name}: where does {name} come from?")
        return frozenset(keys)


@pytest.fixture(scope="module")
def log_calls() -> list[LogCall]:
    return list(Package(PACKAGE).log_calls())


def test_no_log_call_passes_a_key_of_structlog_as_context(log_calls: list[LogCall]) -> None:
    collisions = [
        f"{call.where} {call.event}: {sorted(call.keys & RESERVED_KEYS)}"
        for call in log_calls
        if call.keys & RESERVED_KEYS
    ]
    assert collisions == []
    misused = [f"{call.where} {call.event}" for call in log_calls if call.misused_flags]
    assert misused == []


def test_the_scan_sees_every_kind_of_log_call(log_calls: list[LogCall]) -> None:
    # The scan proves nothing if it misses calls: these are the hard ones to find.
    events = {(call.event, call.where.split(":")[0]): call.keys for call in log_calls}
    assert len(log_calls) > 40
    # (log.warning if ... else log.info)(...)
    assert {"threshold_level", "previous_threshold_level", "pool"} <= events[
        "threshold_level_changed", "poolwatch/actuator/evaluation.py"
    ]
    # A logger method handed to a helper, with a dict built over several statements.
    assert {"exit_code", "stdout", "killed", "argv", "url", "reason", "duration"} <= events[
        "policy_action", "poolwatch/hooks/runner.py"
    ]
    # **settings.summary(): the keys of a method's returned dict.
    assert "client_auth_type" in events["web_config_loaded", "poolwatch/web/app.py"]
    # self._log, a property returning log.bind(...)
    assert "kind" in events["poll_failed", "poolwatch/watcher.py"]


def test_the_scan_finds_a_splatted_collision_and_reports_what_it_cannot_read(
    tmp_path: Path,
) -> None:
    header = "import structlog\nlog = structlog.get_logger()\n"
    (tmp_path / "splat").mkdir()
    (tmp_path / "splat" / "m.py").write_text(
        header + "def g():\n    (log.info if 1 else log.error)('x', **{'level': 'critical'})\n"
    )
    [call] = Package(tmp_path / "splat").log_calls()
    assert call.keys == {"level"}
    (tmp_path / "opaque").mkdir()
    (tmp_path / "opaque" / "m.py").write_text(header + "def f(d):\n    log.info('x', **d)\n")
    with pytest.raises(Unresolved):  # f's mapping comes from no call the scan can see
        list(Package(tmp_path / "opaque").log_calls())


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    yield stream
    structlog.reset_defaults()


def test_a_threshold_change_logs_its_alarm_level_apart_from_the_severity(
    json_log: io.StringIO,
) -> None:
    rule = ThresholdRule(
        selector=Selector(),
        warning=UsedRatio(0.8),
        critical=UsedRatio(0.9),
        clear_ratio=0.02,
        clear_bytes=0,
        hold=0.0,
        time_to_full_warning=None,
        time_to_full_critical=None,
        forecast_window=3600.0,
        hooks=(),
    )
    host = HostSnapshot(name=HOST_A, uri=URI_A, up=True)
    state = PolicyState(threshold_rule=rule)
    for step, used in enumerate((85, 95)):  # warning, then critical
        snapshot = pool("tank", allocation=used * GIB, available=(100 - used) * GIB)
        ctx = PoolContext(HOST_A, host, snapshot, state, NOW + step)
        assert thresholds(ctx, rule, measure(ctx)) is not None
    warning, critical = map(json.loads, json_log.getvalue().splitlines())
    assert (warning["event"], warning["level"]) == ("threshold_level_changed", "warning")
    assert (warning["threshold_level"], warning["previous_threshold_level"]) == ("warning", "ok")
    assert (critical["level"], critical["threshold_level"]) == ("warning", "critical")
    assert critical["previous_threshold_level"] == "warning"
