"""Which metric names a PromQL expression, a rules file or a Grafana dashboard uses.

Good enough for the expressions this repository writes, not a PromQL parser: string literals,
label matchers, ranges, label lists (``by (...)``, ``on (...)``, ...) and Grafana variables are
cut out first, and what is left are metric names, function names (followed by ``(``), keywords
and numbers. A function name that PromQL does not know is an error rather than a metric, so a
typo such as ``rat(...)`` does not slip through as "no metric here".

The rules file is read line by line (the venv has no YAML parser, and poolwatch needs none):
``record:``, ``alert:`` and ``expr:`` keys with plain or block-scalar (``|``, ``>``) values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Prometheus 2.42's functions and aggregation operators, and what Grafana's Prometheus data
# source adds for variable queries.
FUNCTIONS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "days_in_month",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "deg",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "pi",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rad",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sin",
        "sinh",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "vector",
        "year",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "label_values",
        "label_names",
        "metrics",
        "query_result",
    ]
)
KEYWORDS = frozenset(
    [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    ]
)

_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
_COMMENT = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+(?::\w+)?\}?")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
# Grafana's variable query label_values(SELECTOR, LABEL): only SELECTOR is PromQL.
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.DOTALL)


class PromQLError(ValueError):
    """An expression calls something that is not a PromQL function."""


def metric_names(expr: str) -> set[str]:
    """The metric names that ``expr`` selects."""
    text = _COMMENT.sub(" ", _STRING.sub('""', expr))
    text = _GRAFANA_VARIABLE.sub(" ", text)
    while True:  # label lists may hold nothing nested, matchers and ranges neither
        stripped = _RANGE.sub(" ", _MATCHERS.sub(" ", _LABEL_LIST.sub(" ", text)))
        if stripped == text:
            break
        text = stripped
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call:
            if word not in FUNCTIONS:
                raise PromQLError(f"unknown function {word}() in {expr!r}")
        elif word.lower() not in KEYWORDS:
            names.add(word)
    return names


def grafana_variable_query(query: str) -> str:
    """The PromQL part of a Grafana variable query such as ``label_values(metric, label)``."""
    match = _LABEL_VALUES.match(query)
    if match:
        return match.group(1)
    if query.strip().startswith("label_values("):  # label_values(label): every series
        return ""
    return query


@dataclass
class RulesFile:
    path: Path
    expressions: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)


_KEY = re.compile(r"^(?P<indent>\s*)(?:-\s+)?(?P<key>record|alert|expr):\s*(?P<value>.*)$")


def read_rules(path: Path) -> RulesFile:
    rules = RulesFile(path)
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = _KEY.match(lines[i])
        i += 1
        if not match:
            continue
        key, value = match["key"], match["value"].strip()
        if key != "expr":
            getattr(rules, f"{key}s").append(_unquote(value))
            continue
        if value and value[0] in "|>":
            block, i = _block_scalar(lines, i, len(match["indent"]))
            rules.expressions.append(block)
        else:
            rules.expressions.append(_unquote(value))
    return rules


def _block_scalar(lines: list[str], i: int, key_indent: int) -> tuple[str, int]:
    block = []
    while i < len(lines):
        line = lines[i]
        if line.strip() and len(line) - len(line.lstrip()) <= key_indent:
            break
        block.append(line.strip())
        i += 1
    return "\n".join(block).strip(), i


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def series_selectors(test_file: Path) -> list[str]:
    """The ``series:`` of every input series in a promtool rule test file."""
    found = re.findall(r"^\s*-?\s*series:\s*(.+)$", test_file.read_text(), re.MULTILINE)
    return [_unquote(value.strip()) for value in found]


def dashboard_queries(dashboard: Path) -> list[str]:
    """Every PromQL query of a dashboard: panel targets and template variable queries."""
    data = json.loads(dashboard.read_text())
    queries = [target["expr"] for target in _walk_targets(data)]
    for variable in data.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        queries.append(grafana_variable_query(str(query)))
    return queries


def _walk_targets(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node
        for value in node.values():
            yield from _walk_targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_targets(value)
