"""The report of the API benchmark: set-up, commands, checks, rounds, and the Markdown tables for the README."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _api_bench_check import Checked, Truth, Verdict
from _api_bench_load import WRK_THREADS, Run, Summary, wrk_command
from _api_bench_servers import Server

TITLES = {"sdi": "sdi", "tipg": "TiPg", "stock": "stock pygeoapi"}


@dataclass(frozen=True)
class Endpoint:
    """A measured endpoint: key (as in the checks), Markdown label, target ratio sdi ÷ TiPg (req/s)."""

    key: str
    label: str
    target: float


@dataclass
class Report:
    """Everything the report prints."""

    argv: str
    args: dict[str, Any]
    info: dict[str, str]
    names: list[str]
    endpoints: list[Endpoint]
    boxes: dict[str, str]
    truth: Truth
    checked: Checked
    results: dict[tuple[str, str], Summary]
    servers: dict[str, Server]
    cached: tuple[Run, Verdict] | None
    cached_target_ms: float
    cached_requests: tuple[int, int]
    load_seconds: float
    warmup_s: float
    tile: tuple[int, int, int]


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _num(value: float, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    text = f"{value:,.2f}" if value < 10 else f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    return text + unit


def _short(verdict: Verdict | None, width: int = 110) -> str:
    if verdict is None:
        return "n/a"
    if verdict.ok:
        return "ok"
    text = f"FAIL: {verdict.text}".replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


def _result(report: Report, endpoint: Endpoint) -> tuple[str, str]:
    """(ratio text, PASS/FAIL text) of sdi ÷ TiPg for one endpoint."""
    sdi, tipg = report.results.get((endpoint.key, "sdi")), report.results.get((endpoint.key, "tipg"))
    if sdi is None or tipg is None or not tipg.rps:
        return "n/a", "n/a"
    ratio = sdi.rps / tipg.rps
    reasons = []
    if ratio < endpoint.target:
        reasons.append(f"< {endpoint.target:g}×")
    verdict = report.checked.verdicts.get(endpoint.key, {}).get("sdi")
    if verdict is None or not verdict.ok:
        reasons.append("wrong answer")
    if sdi.non2xx or sdi.errors:
        reasons.append("failed requests")
    return f"{ratio:.2f}×", "**PASS**" if not reasons else f"**FAIL** ({', '.join(reasons)})"


def _latency(summary: Summary | Run | None) -> str:
    return "n/a" if summary is None else f"{_num(summary.p50_ms)} / {_num(summary.p99_ms)}"


def _failures(summary: Summary | Run | None) -> str:
    return "n/a" if summary is None else f"{summary.non2xx + summary.errors}"


def print_report(report: Report) -> None:
    """Print the whole report to stdout."""
    a = report.args
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cols = "connection" if a["connections"] == 1 else "connections"
    method = (f"each server {a['workers']} uvicorn workers on 127.0.0.1, reading the same database as the "
              f"read-only role sdi_reader over TCP; wrk with {a['connections']} {cols} ({WRK_THREADS} thread), "
              f"a {report.warmup_s:g} s warm-up of every server and endpoint, then {a['rounds']} interleaved "
              f"round{'s' if a['rounds'] != 1 else ''} of "
              f"{a['duration']:g} s; req/s = median over the rounds, p50/p99 = medians of each round's (wrk counts "
              "only the requests that completed within the round), "
              "non-2xx and socket errors summed over the rounds")
    print("\n" + "=" * 100)
    print("API benchmark: sdi vs TiPg\n")
    print(f"date:     {now}")
    for key, value in report.info.items():
        print(f"{key + ':':<9} {value}" + (f", at the end {_loadavg()}" if key == "machine" else ""))
    print(f"data:     {a['n']:,} synthetic polygons (octagons in EPSG:2326, 5% within 2 km of Central), generated "
          f"and loaded with `sdi load` in {report.load_seconds:.0f} s, then VACUUM ANALYZE")
    print(f"method:   {method}")

    print("\ncommands:")
    print(f"  benchmark:  {report.argv}")
    for name, server in report.servers.items():
        print(f"  {name + ':':<11} {server.command}")
    wrk = " ".join(wrk_command("URL", a["duration"], a["connections"]))
    print(f"  load:       {wrk}   (warm-up: the same with -d {report.warmup_s:g}s), URL:")
    for name in report.names:
        for key, url in report.checked.urls.get(name, {}).items():
            print(f"      {key:<9} {name:<5} {url}")
    if report.cached is not None:
        warm, count = report.cached_requests
        url = report.checked.urls["sdi"]["tile"].split("/collections/", 1)[-1]
        print(f"  cached tile: {warm} + {count} sequential GETs on one keep-alive connection (Python http.client) to "
              f"sdi-cached: /collections/{url}; latency of the last {count}")

    print("\ncorrectness, checked before the load (against PostGIS; TiPg's answer against sdi's):")
    for endpoint in report.endpoints:
        for name, verdict in report.checked.verdicts.get(endpoint.key, {}).items():
            print(f"  {endpoint.key:<9} {TITLES[name]:<6} {verdict.shown(name)}")
        if endpoint.key in report.checked.same:
            print(f"  {endpoint.key:<9} same as TiPg: {report.checked.same[endpoint.key]}")
    if report.cached is not None:
        print(f"  cached    sdi    {report.cached[1]}")
    for note in report.checked.notes:
        print(f"  note: {note}")

    print("\nrounds (req/s):")
    for endpoint in report.endpoints:
        for name in report.names:
            summary = report.results.get((endpoint.key, name))
            if summary is None:
                print(f"  {endpoint.key:<9} {name:<5} not measured (its check fetch failed)")
                continue
            rounds = "  ".join(f"{r.rps:9.1f}" for r in summary.runs)
            print(f"  {endpoint.key:<9} {name:<5} {rounds}   median {summary.rps:9.1f}   p50 {_num(summary.p50_ms)} ms"
                  f"  p99 {_num(summary.p99_ms)} ms  non-2xx {summary.non2xx}  errors {summary.errors}")

    print("\n" + "-" * 40 + " Markdown " + "-" * 40 + "\n")
    print_markdown(report, now)


def print_markdown(report: Report, now: str) -> None:
    """The result tables, ready to paste into the README."""
    a = report.args
    stock = "stock" in report.names
    print(f"{a['n']:,} synthetic polygons in EPSG:2326; {now}; {report.info['machine'].split(';')[0]}; "
          f"{report.info['database'].split(', server')[0]}; {report.info['software']}; sdi: {report.info['sdi']}. "
          f"{a['workers']} uvicorn workers per server, read-only role over TCP; wrk, {a['connections']} connections, "
          f"{report.warmup_s:g} s warm-up, {a['rounds']} interleaved round{'s' if a['rounds'] != 1 else ''} "
          f"× {a['duration']:g} s, median req/s; latencies are medians of each round's p50 / p99.\n")
    head = ("| endpoint | sdi req/s | TiPg req/s | sdi ÷ TiPg | target | result | sdi p50 / p99 ms | TiPg p50 / p99 ms "
            "| non-2xx + errors sdi / TiPg | sdi's answer (vs PostGIS) | TiPg's answer vs sdi's |")
    rule = "|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|"
    if stock:
        head += " stock req/s | sdi ÷ stock |"
        rule += "---:|---:|"
    print(head)
    print(rule)
    passed = total = 0
    for endpoint in report.endpoints:
        sdi = report.results.get((endpoint.key, "sdi"))
        tipg = report.results.get((endpoint.key, "tipg"))
        ratio, result = _result(report, endpoint)
        total += result != "n/a"
        passed += result.startswith("**PASS")
        verdicts = report.checked.verdicts.get(endpoint.key, {})
        row = (f"| {endpoint.label} | {_num(sdi.rps) if sdi else 'n/a'} | {_num(tipg.rps) if tipg else 'n/a'} "
               f"| {ratio} | ≥ {endpoint.target:g}× | {result} | {_latency(sdi)} | {_latency(tipg)} "
               f"| {_failures(sdi)} / {_failures(tipg)} | {_short(verdicts.get('sdi'))} "
               f"| {_short(report.checked.same.get(endpoint.key))} |")
        if stock:
            other = report.results.get((endpoint.key, "stock"))
            ratio_stock = f"{sdi.rps / other.rps:.2f}×" if sdi and other and other.rps else "n/a"
            row += f" {_num(other.rps) if other else 'n/a'} | {ratio_stock} |"
        print(row)
    if report.cached is not None:
        run, verdict = report.cached
        met = run.p50_ms < report.cached_target_ms and verdict.ok and not (run.non2xx or run.errors)
        total += 1
        passed += met
        warm, count = report.cached_requests
        row = (f"| same MVT tile from sdi's tile cache (default `SDI_TILE_CACHE_MB`): latency of {count} sequential "
               f"requests on one connection after {warm} | — | — | — | p50 < {report.cached_target_ms:g} ms "
               f"| {'**PASS**' if met else '**FAIL**'} | {_latency(run)} | — | {_failures(run)} / — "
               f"| {_short(verdict)} | — |")
        print(row + (" — | — |" if stock else ""))

    print("\n| bbox (CRS84), `limit=100` | PostGIS count in lon/lat | sdi numberMatched | TiPg numberMatched |")
    print("|---|---:|---:|---:|")
    for key, bbox in report.boxes.items():
        truth = report.truth.count[key]
        matched = report.checked.matched.get(key, {})
        cells = []
        for name in ("sdi", "tipg"):
            value = matched.get(name)
            if name not in report.names:
                cells.append("—")
            elif value is None:
                cells.append("n/a" if name == "tipg" else "**n/a ✘**")
            elif value == truth:
                cells.append(f"{value:,} ✔" if name == "sdi" else f"{value:,} (= truth)")
            else:
                cells.append(f"**{value:,} ✘**" if name == "sdi" else f"{value:,} ({value - truth:+,})")
        print(f"| `{bbox}` | {truth:,} | {cells[0]} | {cells[1]} |")
    print(f"\nTargets met: {passed} of {total}.")
