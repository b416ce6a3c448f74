"""Figures and report of the overload benchmark (``benchmarks/overload_bench.py``): the targets of the
hardening issue, PASS/FAIL against each, as a plain table and as Markdown for the README."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from _overload_clients import PROBE_CAP, Record

ITEM_P99_MS = 500.0
CONFORMANCE_P99_MS = 100.0
IDLE_S = 5.0
RSS_MB = 50.0
OVER_TIMEOUT_S = 1.0  #: a request may run this much past the statement timeout


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0–100) of ``values``; NaN when empty."""
    data = sorted(values)
    if not data:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[rank - 1]


def outcome_key(record: Record) -> str:
    """How a heavy request ended, as a histogram key: ``200``, ``503``, ``500``, ``200 cut off``, ...."""
    if record.outcome == "complete":
        return str(record.status)
    if record.outcome == "incomplete":
        return f"{record.status} cut off"
    return {"error": "no response", "aborted": "open at stop", "skipped": "skipped"}[record.outcome]


@dataclass
class Probe:
    """The probe's figures for one URL kind."""

    kind: str
    records: list[Record]

    @property
    def sent(self) -> list[Record]:
        """Probes sent (not skipped)."""
        return [r for r in self.records if r.outcome != "skipped"]

    @property
    def latencies_ms(self) -> list[float]:
        """Every sent probe's time (an aborted one's time until the stop: a lower bound)."""
        return [r.seconds * 1e3 for r in self.sent]

    @property
    def ok(self) -> int:
        """Probes answered 200 in full."""
        return sum(r.outcome == "complete" and r.status == 200 for r in self.records)

    @property
    def skipped(self) -> int:
        """Ticks not sent because too many probes were unanswered."""
        return sum(r.outcome == "skipped" for r in self.records)

    @property
    def unanswered(self) -> int:
        """Probes still open at the stop."""
        return sum(r.outcome == "aborted" for r in self.records)

    def p(self, q: float) -> float:
        """Latency percentile (ms)."""
        return percentile(self.latencies_ms, q)

    def text(self) -> str:
        """``p50 / p99 ms (n, answered 200, ...)``."""
        extra = ""
        if self.unanswered:
            extra += f", {self.unanswered} unanswered at the stop (counted at their time so far)"
        if self.skipped:
            extra += f", {self.skipped} ticks skipped (≥ {PROBE_CAP} unanswered)"
        return (f"p50 {_ms(self.p(50))} / p99 {_ms(self.p(99))} ms; {self.ok} of {len(self.records)} answered 200"
                + extra)


@dataclass
class Figures:
    """Everything measured in one run."""

    duration_s: float
    statement_timeout_s: float
    heavy: list[Record]
    probes: dict[str, Probe]
    baseline: dict[str, Probe]
    active_at_stop: int
    idle_after_s: float | None  #: None: not idle within drain_timeout_s
    drain_timeout_s: float
    oldest_query_s: float
    most_active: int
    rss_start: dict[int, float]
    rss_peak: dict[int, float]
    rss_after: dict[int, float]
    settle_s: float
    tracebacks: int
    log_lines: int
    log_head: list[str] = field(default_factory=list)  #: the first lines the server logged during the run
    notes: list[str] = field(default_factory=list)

    # --- derived ------------------------------------------------------------------------------------------

    def histogram(self, kind: str | None = None) -> Counter[str]:
        """Heavy requests by how they ended (all kinds, or ``kind``)."""
        return Counter(outcome_key(r) for r in self.heavy if kind is None or r.kind == kind)

    def longest(self) -> tuple[float, Record | None]:
        """The longest request seen (heavy or probe; one open at the stop counts with its time so far)."""
        every = [r for r in self.heavy if r.outcome != "skipped"]
        every += [r for p in self.probes.values() for r in p.sent]
        if not every:
            return 0.0, None
        worst = max(every, key=lambda r: r.seconds)
        return worst.seconds, worst

    def workers_mem(self) -> list[tuple[int, float | None, float | None, float | None]]:
        """(pid, start MB, peak MB, after MB) per worker seen at the start or after."""
        pids = sorted(set(self.rss_start) | set(self.rss_after))
        return [(pid, self.rss_start.get(pid), self.rss_peak.get(pid), self.rss_after.get(pid)) for pid in pids]

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(target, threshold, measured, met) for each target of the issue."""
        rows: list[tuple[str, str, str, bool]] = []
        for kind, label, limit in (("item", "`items/{id}` probe latency under load", ITEM_P99_MS),
                                   ("conformance", "`/conformance` probe latency under load", CONFORMANCE_P99_MS)):
            probe = self.probes.get(kind)
            if probe is None or not probe.records:
                rows.append((label, f"p99 < {limit:g} ms, every probe 200", "no probe ran", False))
                continue
            met = probe.p(99) < limit and probe.ok == len(probe.records)
            rows.append((label, f"p99 < {limit:g} ms, every probe 200", probe.text(), met))
        if self.idle_after_s is None:
            idle = (f"still busy {self.drain_timeout_s:g} s after the stop ({self.active_at_stop} queries running "
                    "at the stop)")
            rows.append(("database idle after the clients stop", f"≤ {IDLE_S:g} s", idle, False))
        else:
            rows.append(("database idle after the clients stop", f"≤ {IDLE_S:g} s",
                         f"{self.idle_after_s:.1f} s ({self.active_at_stop} queries running at the stop)",
                         self.idle_after_s <= IDLE_S))
        mem = self.workers_mem()
        deltas = [(after - start) for _, start, _, after in mem if start is not None and after is not None]
        gone = [pid for pid, start, _, after in mem if start is None or after is None]
        mem_text = "; ".join(f"{_mb(s)} → peak {_mb(p)} → {_mb(a)}" for _, s, p, a in mem)
        if gone:
            mem_text += f"; worker(s) {gone} replaced during the run"
        rows.append((f"worker memory {self.settle_s:g} s after the clients stop", f"≤ start + {RSS_MB:g} MB each",
                     mem_text or "no worker found", bool(deltas) and not gone and max(deltas) <= RSS_MB))
        seconds, worst = self.longest()
        limit_s = self.statement_timeout_s + OVER_TIMEOUT_S
        if worst is None:
            rows.append(("longest request", f"≤ {limit_s:g} s", "no request", False))
        else:
            still = " (still open at the stop)" if worst.outcome == "aborted" else ""
            rows.append(("longest request", f"≤ statement timeout + 1 s = {limit_s:g} s",
                         f"{seconds:.1f} s{still}: {worst.kind} `{_short_url(worst.url)}`", seconds <= limit_s))
        hist = self.histogram()
        bad = {k: v for k, v in hist.items() if k not in ("200", "204", "503", "open at stop")}
        rows.append(("heavy requests end in 200 or 503",
                     "never 500, another status, a cut-off body or no answer (204: an empty tile)",
                     _hist_text(hist), not bad and (hist["200"] + hist["204"] + hist["503"]) > 0))
        return rows


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} MB"


def _short_url(url: str) -> str:
    return url if len(url) <= 70 else url[:67] + "..."


def _hist_text(hist: Counter[str]) -> str:
    if not hist:
        return "no heavy request"
    order = sorted(hist, key=lambda k: (not k.startswith("200"), not k.startswith("204"), not k.startswith("503"),
                                        k))
    return ", ".join(f"{k}: {hist[k]:,}" for k in order)


def print_report(fig: Figures, *, header: dict[str, str], args: dict[str, Any], urls: dict[str, list[str]],
                 server_env: dict[str, str]) -> int:
    """Print the figures, the targets with PASS/FAIL, and the Markdown for the README; return the targets met."""
    print("\n" + "=" * 100)
    for label, value in header.items():
        print(f"{label:<10} {value}")
    print(f"{'load':<10} {args['connections']} clients for {args['duration']:g} s "
          f"({args['items_share']:.0%} items, the rest tiles), probe every {args['probe_interval'] * 1e3:g} ms; "
          f"Accept-Encoding: {args['accept_encoding']}")
    print(f"{'server':<10} " + " ".join(f"{k}={v}" for k, v in sorted(server_env.items())))
    for kind, shown in urls.items():
        print(f"{kind:<10} " + "  ".join(shown))
    print("\nheavy requests by kind:")
    for kind in sorted({r.kind for r in fig.heavy}):
        mine = [r for r in fig.heavy if r.kind == kind]
        done = [r for r in mine if r.outcome == "complete" and r.status == 200]
        mb = sum(r.nbytes for r in mine) / 1e6
        times = [r.seconds for r in done]
        largest = max((r.nbytes for r in done), default=0) / 1e6
        print(f"  {kind:<6} {len(mine):>6} requests, {len(done) / fig.duration_s:7.2f} × 200/s, {mb:9.1f} MB read "
              f"(largest 200 body {largest:.2f} MB as sent); 200s took p50 {_ms(percentile(times, 50) * 1e3)} / max "
              f"{_ms(max(times, default=float('nan')) * 1e3)} ms; {_hist_text(fig.histogram(kind))}")
    failed = [r for r in fig.heavy if r.outcome in ("error", "incomplete")
              or (r.outcome == "complete" and r.status not in (200, 204, 503))]
    for example in sorted({f"{outcome_key(r)}: {r.detail or r.url}" for r in failed})[:5]:
        print(f"  e.g. {example}")
    print("probe before the load (quiet server):")
    for probe in fig.baseline.values():
        print(f"  {probe.kind:<12} {probe.text()}")
    print("probe under load:")
    for probe in fig.probes.values():
        print(f"  {probe.kind:<12} {probe.text()}")
    print(f"database: at most {fig.most_active} queries running at once; the longest ran {fig.oldest_query_s:.1f} s "
          f"(pg_stat_activity, sampled every 0.1 s)")
    print("workers:   " + "; ".join(f"pid {pid}: {_mb(s)} at the start, peak {_mb(p)}, {_mb(a)} "
                                      f"{fig.settle_s:g} s after the stop" for pid, s, p, a in fig.workers_mem()))
    print(f"server log: {fig.log_lines:,} lines, {fig.tracebacks:,} Python tracebacks")
    for line in fig.log_head:
        print(f"  | {line[:160]}")
    for note in fig.notes:
        print(f"note: {note}")

    rows = fig.targets()
    width = max(len(r[0]) for r in rows)
    print("\n" + f"{'target':<{width}}  result  measured")
    for name, threshold, measured, met in rows:
        print(f"{name:<{width}}  {'PASS' if met else 'FAIL':<6}  {measured}   [{threshold}]")
    passed = sum(r[3] for r in rows)
    print(f"\nTargets met: {passed} of {len(rows)}.")

    print("\n" + "-" * 40 + " Markdown " + "-" * 40 + "\n")
    print(f"{header.get('data', '')}; {header.get('date', '')}; {header.get('machine', '').split(';')[0]}; "
          f"{header.get('database', '').split(', server')[0]}; sdi: {header.get('sdi', '')}. `sdi serve` with "
          f"{args['workers']} workers, `SDI_STATEMENT_TIMEOUT_MS` = {fig.statement_timeout_s * 1e3:,.0f}, "
          f"`SDI_TILE_CACHE_MB` = {server_env.get('SDI_TILE_CACHE_MB', 'default')}; {args['connections']} clients "
          f"for {args['duration']:g} s, each sending back to back `items?limit=10000&bbox={args['bbox']}` or "
          f"low-zoom tiles (WebMercatorQuad 8/111/209, HK80Grid z0–z4 over Hong Kong); a probe sends "
          f"`items/{{id}}` and `/conformance` every {args['probe_interval'] * 1e3:g} ms on new connections.\n")
    print("| target | measured | result |")
    print("|---|---|---|")
    for name, threshold, measured, met in rows:
        print(f"| {name}: {threshold} | {measured.replace('|', '/')} | {'**PASS**' if met else '**FAIL**'} |")
    print(f"\nTargets met: {passed} of {len(rows)}.")
    return passed
