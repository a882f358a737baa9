"""Multi-agent traffic read from the runs on record (the seed's MultiAgentMonitor, with nothing to track by
hand): per receiving agent and per sender -> receiver pair, messages, errors, latency p50/p95 and tokens.

Latency is from sending (the run was created) to the reply (it finished): what the sender waited,
queueing included, so an overloaded agent shows up. Functions take a connection inside a transaction.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mcp_letta.models import AgentMetrics, Metrics, PairMetrics
from mcp_letta.store.sqlite.db import Conn

HOST = "host"
ERROR_STATUSES = ("failed", "interrupted")
PENDING_STATUSES = ("queued", "running")
TIMED_STATUSES = ("completed", "failed")  # a cancelled or interrupted run's duration says nothing about speed


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``; None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class _Tally:
    messages: int = 0
    errors: int = 0
    pending: int = 0
    tokens: int = 0
    cached_tokens: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, row: Any) -> None:
        """Count one run row."""
        self.messages += 1
        self.errors += row["status"] in ERROR_STATUSES
        self.pending += row["status"] in PENDING_STATUSES
        self.tokens += row["total_tokens"]
        self.cached_tokens += row["cached_tokens"]
        if row["status"] in TIMED_STATUSES and row["finished_at"]:
            took = datetime.fromisoformat(row["finished_at"]) - datetime.fromisoformat(row["created_at"])
            self.latencies.append(round(took.total_seconds() * 1000, 3))

    def summary(self) -> dict[str, Any]:
        """The model fields: counts, latency percentiles, tokens."""
        return {
            "messages": self.messages,
            "errors": self.errors,
            "pending": self.pending,
            "latency_p50_ms": percentile(self.latencies, 50),
            "latency_p95_ms": percentile(self.latencies, 95),
            "tokens": self.tokens,
            "cached_tokens": self.cached_tokens,
        }


def _slowest_first(item: AgentMetrics | PairMetrics) -> tuple[bool, float, int]:
    p95 = item.latency_p95_ms
    return (p95 is None, -(p95 or 0.0), -item.messages)


def compute(conn: Conn, *, agent_id: str | None = None, since: datetime | None = None) -> Metrics:
    """Metrics over every run (created at or after ``since``), or only those to or from ``agent_id``."""
    sql = (
        "SELECT agent_id, agent_name, sender, status, created_at, finished_at, total_tokens, cached_tokens "
        "FROM runs WHERE 1=1"
    )
    args: list[Any] = []
    if since is not None:
        moment = since if since.tzinfo else since.replace(tzinfo=UTC)
        sql += " AND created_at >= ?"
        args.append(moment.astimezone(UTC).isoformat(timespec="microseconds"))
    if agent_id is not None:
        sql += " AND (agent_id = ? OR sender = ?)"
        args += [agent_id, agent_id]
    rows = conn.execute(sql, args).fetchall()
    names = {r["id"]: r["name"] for r in conn.execute("SELECT id, name FROM agents")}
    for row in rows:  # a deleted agent keeps the name its runs were recorded under
        names.setdefault(row["agent_id"], row["agent_name"])

    per_agent: dict[str, _Tally] = defaultdict(_Tally)
    per_pair: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    for row in rows:
        if agent_id is None or row["agent_id"] == agent_id:
            per_agent[row["agent_id"]].add(row)
        sender = HOST if row["sender"] is None else names.get(row["sender"], row["sender"])
        per_pair[(sender, names[row["agent_id"]])].add(row)
    agents = [AgentMetrics(agent=names[a], agent_id=a, **t.summary()) for a, t in per_agent.items()]
    pairs = [PairMetrics(sender=s, receiver=r, **t.summary()) for (s, r), t in per_pair.items()]
    return Metrics(since=since, agents=sorted(agents, key=_slowest_first), pairs=sorted(pairs, key=_slowest_first))
