#!/usr/bin/env python3
"""Fails unless every metric the Grafana dashboard and the Prometheus rules in
deploy/observability/ query is one the server exports.

A dashboard panel or an alert on a metric that does not exist shows "No data" or never fires,
and nothing else says so: a renamed counter would silently blind both. So the names are taken
from the server's source, where they are made, rather than from a list that could drift:

- exported: the string literal that names the metric in every `counter!`, `gauge!` and
  `histogram!` call under server/src. Where the name is not a literal but a helper's result
  (fair_share.rs's `metrics::gauge!(kind.gauge(), ...)`), the string literals in that helper's
  body (`fn gauge`, in the same file) are its names; a name this script cannot resolve fails it.
  Histograms are exported as Prometheus histograms (`_bucket`, `_sum`, `_count`) when
  telemetry.rs configures buckets (`set_buckets`), else as summaries (the name itself, with
  `quantile`, plus `_sum` and `_count`): the script reads which.
- used: every metric selector in the dashboard's queries (panel targets and template
  variables' `label_values(...)`) and in the rules' `expr`, found by parsing the PromQL
  (promql-parser), not by pattern matching, so a query that does not parse fails too.
  Recording rules' outputs (`record:`) count as exported for the rules and dashboard that use them.

It also checks what makes the dashboard importable anywhere: a `datasource` template
variable of type prometheus that every panel and query uses, unique panel ids; and that every
alert carries a severity and summary, description and runbook annotations.

With --write-rules FILE it also writes every dashboard query, Grafana's variables replaced, as
a recording rule, so that `promtool check rules FILE` parses each with Prometheus's own parser
as well (promql-parser is a reimplementation; the two could disagree).

Run with the deploy virtualenv's python (scripts/validate-deploy.sh does):
    check_dashboard_metrics.py [--dashboard FILE] [--rules FILE ...] [--source DIR] [--write-rules FILE]
"""

import argparse
import json
import re
import sys
from pathlib import Path

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parent.parent
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
MACRO = re.compile(r"\b(counter|gauge|histogram)!\s*\(")
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Failure(Exception):
    """A finding that fails the check."""


def first_argument(text, start):
    """The macro's first argument, from `start` (just past the open parenthesis) to the comma or
    closing parenthesis at depth 0."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == '"':
            i = STRING.match(text, i).end()
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif c == "," and depth == 0:
            break
        i += 1
    return text[start:i].strip()


def function_body(text, name):
    """The bodies of every `fn name(` in `text`, brace-matched."""
    bodies = []
    for match in re.finditer(r"\bfn\s+" + re.escape(name) + r"\b[^{;]*\{", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            if text[i] == '"':
                i = STRING.match(text, i).end()
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        bodies.append(text[match.end() : i])
    return bodies


def histograms_have_buckets(source):
    telemetry = (source / "telemetry.rs").read_text(encoding="utf-8")
    if re.search(r"\.set_buckets\s*\(", telemetry):
        return True
    if "set_buckets_for_metric" in telemetry:
        # Some histograms with buckets, the rest summaries: which is which would need the
        # matchers read too. Say so rather than guess.
        raise Failure("telemetry.rs sets buckets per metric only; teach check_dashboard_metrics.py which")
    return False


def exported_metrics(source):
    """Every name the server's /metrics can show, with where each is made."""
    buckets = histograms_have_buckets(source)
    names = {}
    for path in sorted(source.rglob("*.rs")):
        text = path.read_text(encoding="utf-8")
        for match in MACRO.finditer(text):
            kind = match.group(1)
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            argument = first_argument(text, match.end())
            literal = STRING.fullmatch(argument)
            if literal:
                made = [literal.group(1)]
            else:
                # A helper that returns the name: the last call in the argument, `kind.gauge()`.
                helper = re.search(r"(\w+)\s*\(\s*\)\s*$", argument)
                bodies = function_body(text, helper.group(1)) if helper else []
                made = [s for body in bodies for s in STRING.findall(body) if METRIC_NAME.match(s)]
                if not made:
                    raise Failure(
                        f"{where}: cannot tell which metric {kind}!({argument}, ...) makes; "
                        "name it with a string literal, or a helper fn in the same file that returns literals"
                    )
            for name in made:
                if not METRIC_NAME.match(name):
                    raise Failure(f"{where}: {name!r} is not a valid Prometheus metric name")
                if kind == "histogram":
                    series = [name + "_bucket", name + "_sum", name + "_count"] if buckets else [
                        name, name + "_sum", name + "_count"]
                else:
                    series = [name]
                for s in series:
                    names.setdefault(s, where)
    return names


def selectors(node):
    """The metric names of every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            yield node.name
        else:
            raise Failure(f"selector without a metric name: {node.prettify()}")
        return
    if isinstance(node, promql_parser.MatrixSelector):
        yield from selectors(node.vector_selector)
        return
    for attribute in ("expr", "lhs", "rhs", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from selectors(child)
    for child in getattr(node, "args", None) or []:
        yield from selectors(child)


def without_variables(query):
    """`query` as Prometheus would receive it: Grafana's interval variables (`[$__rate_interval]`)
    replaced by a duration. Others (`"$job"`) sit inside label matchers' strings, where they
    parse as they are."""
    return re.sub(r"\[\s*\$\{?\w+\}?\s*\]", "[5m]", query)


def metrics_in(query, where):
    """Parses `query` and returns the metric names it selects."""
    query = without_variables(query)
    try:
        return set(selectors(promql_parser.parse(query)))
    except Failure as e:
        raise Failure(f"{where}: {e}") from None
    except Exception as e:  # the parser's own error type varies by version
        raise Failure(f"{where}: the query does not parse: {e}\n    {query}") from None


def dashboard_queries(path):
    """(where, query) of every PromQL query in the dashboard; checks the data source wiring."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    variables = dashboard.get("templating", {}).get("list", [])
    datasource = [v for v in variables if v.get("name") == "datasource"]
    if not datasource or datasource[0].get("type") != "datasource" or datasource[0].get("query") != "prometheus":
        raise Failure(f"{path}: needs a template variable `datasource` of type datasource, query prometheus")
    wanted = {"type": "prometheus", "uid": "${datasource}"}
    queries = []
    for variable in variables:
        if variable.get("type") != "query":
            continue
        where = f"{path.name}: variable {variable['name']}"
        if variable.get("datasource") != wanted:
            raise Failure(f"{where}: its datasource must be {wanted}")
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query
        call = re.fullmatch(r"\s*(?:label_values|query_result)\((.*?)(?:,\s*\w+)?\)\s*", query or "", re.S)
        if not call:
            raise Failure(f"{where}: unsupported variable query {query!r}")
        if call.group(1).strip():
            queries.append((where, call.group(1)))
    ids = set()

    def walk(panels):
        for panel in panels:
            where = f"{path.name}: panel {panel.get('id')} {panel.get('title')!r}"
            if panel.get("id") in ids:
                raise Failure(f"{where}: panel id used twice")
            ids.add(panel.get("id"))
            if panel.get("type") == "row":
                walk(panel.get("panels", []))
                continue
            if panel.get("datasource") != wanted:
                raise Failure(f"{where}: its datasource must be {wanted}")
            if not panel.get("targets"):
                raise Failure(f"{where}: has no query")
            for target in panel["targets"]:
                if target.get("datasource", wanted) != wanted:
                    raise Failure(f"{where}: query {target.get('refId')}: its datasource must be {wanted}")
                queries.append((f"{where} query {target.get('refId')}", target["expr"]))

    walk(dashboard.get("panels", []))
    return queries


def rule_queries(path):
    """(where, query) of every rule, and the names recording rules define; checks alerts'
    labels and annotations."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    queries, recorded = [], set()
    for group in document["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            where = f"{path.name}: {group['name']}/{name}"
            queries.append((where, str(rule["expr"])))
            if "record" in rule:
                recorded.add(rule["record"])
                continue
            missing = {"summary", "description", "runbook"} - set(rule.get("annotations", {}))
            if missing:
                raise Failure(f"{where}: no {', '.join(sorted(missing))} annotation")
            if "severity" not in rule.get("labels", {}):
                raise Failure(f"{where}: no severity label")
    return queries, recorded


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--dashboard", type=Path, default=ROOT / "deploy/observability/rookery-dashboard.json")
    parser.add_argument("--rules", type=Path, nargs="+", default=[ROOT / "deploy/observability/rookery-alerts.yaml"])
    parser.add_argument("--source", type=Path, default=ROOT / "server/src")
    parser.add_argument("--write-rules", type=Path, help="write the dashboard's queries as recording rules here")
    args = parser.parse_args()
    try:
        exported = exported_metrics(args.source.resolve())
        queries = dashboard_queries(args.dashboard)
        if args.write_rules:
            rules = [
                {"record": f"dashboard:query_{i}", "expr": without_variables(query)}
                for i, (_, query) in enumerate(queries)
            ]
            args.write_rules.write_text(
                "# Written by scripts/check_dashboard_metrics.py: the dashboard's queries, for promtool.\n"
                + yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False),
                encoding="utf-8",
            )
        recorded = set()
        for rules in args.rules:
            more, names = rule_queries(rules)
            queries += more
            recorded |= names
        used = {}
        for where, query in queries:
            for name in metrics_in(query, where):
                used.setdefault(name, []).append(where)
    except Failure as e:
        print(f"check_dashboard_metrics: {e}", file=sys.stderr)
        return 1
    unknown = {name: wheres for name, wheres in used.items() if name not in exported and name not in recorded}
    for name, wheres in sorted(unknown.items()):
        print(f"check_dashboard_metrics: {name} is not a metric the server exports; used by:", file=sys.stderr)
        for where in wheres:
            print(f"    {where}", file=sys.stderr)
    if unknown:
        print(
            f"check_dashboard_metrics: {len(unknown)} unknown metric name(s); the server exports "
            f"{', '.join(sorted(exported))}",
            file=sys.stderr,
        )
        return 1
    print(
        f"dashboard and rules: {len(queries)} queries use {len(used)} metrics, each exported by "
        f"server/src ({len(exported)} series names) or recorded by the rules"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
