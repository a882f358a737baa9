"""Runs in SQLite: create, read, claim (one running run per agent, across processes), steps, finish, cancel.

Also the ``processes`` table behind leases: heartbeats, and what happens to a running run whose process
stopped: it goes back to the queue to be resumed from its last committed step (``release``), unless it
cannot be. Functions take a connection inside a transaction; see ``Database``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from mcp_letta.errors import Invalid, NotFound
from mcp_letta.models import Page, Run, RunStep, RunUsage, ToolCallRecord
from mcp_letta.store import paging
from mcp_letta.store.interface import HOST, CancelOutcome, Claimed, ClaimOutcome, Owner, RunState
from mcp_letta.store.limits import MAX_CURSOR, MAX_TEXT, check_page, check_ref, check_text, clean_text, shown
from mcp_letta.store.sqlite import replies
from mcp_letta.store.sqlite.db import Conn, new_ordered_id, now_iso

STATUSES = ("queued", "running", "completed", "failed", "cancelled", "interrupted")
MAX_CRASHES = 3  # a run whose process died this many times while running it is not resumed again
CANCELLED_WHILE_STOPPED = "cancelled: its process stopped before the run saw the request"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a reused pid looks alive: the safe side)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


# -- reading ----------------------------------------------------------------------------------------
def _steps(conn: Conn, run_ids: list[str]) -> dict[str, list[RunStep]]:
    if not run_ids:
        return {}
    marks = ",".join("?" * len(run_ids))
    out: dict[str, list[RunStep]] = {run_id: [] for run_id in run_ids}
    for r in conn.execute(f"SELECT * FROM run_steps WHERE run_id IN ({marks}) ORDER BY run_id, idx", run_ids):
        out[r["run_id"]].append(
            RunStep(
                index=r["idx"],
                tool_calls=[ToolCallRecord.model_validate(tc) for tc in json.loads(r["tool_calls"])],
                usage=RunUsage(
                    prompt_tokens=r["prompt_tokens"],
                    completion_tokens=r["completion_tokens"],
                    total_tokens=r["total_tokens"],
                    cached_tokens=r["cached_tokens"],
                ),
                started_at=r["started_at"],
                finished_at=r["finished_at"],
            )
        )
    return out


def run_of(row: Any, steps: list[RunStep]) -> Run:
    """The model of a run row, with its steps (a run just claimed has none)."""
    return Run(
        id=row["id"],
        agent_id=row["agent_id"],
        agent_name=row["agent_name"],
        status=row["status"],
        input=row["input"],
        role=row["role"],
        sender=row["sender"],
        parent_run_id=row["parent_run_id"],
        depth=row["depth"],
        reply_to=row["reply_to"],
        resumes=row["resumes"],
        steps=steps,
        reply=row["reply"],
        error=row["error"],
        stop_reason=row["stop_reason"],
        usage=RunUsage(
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            total_tokens=row["total_tokens"],
            cached_tokens=row["cached_tokens"],
        ),
        cancel_requested=bool(row["cancel_requested"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def to_runs(conn: Conn, rows: list[Any]) -> list[Run]:
    """Turn run rows into models, with their steps."""
    steps = _steps(conn, [r["id"] for r in rows])
    return [run_of(r, steps[r["id"]]) for r in rows]


def get_run(conn: Conn, run_id: str) -> Run:
    """A run by id; the error for an unknown id names the most recent runs."""
    check_ref(run_id, "run")
    row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        recent = conn.execute("SELECT id, agent_name, status FROM runs ORDER BY seq DESC LIMIT 5").fetchall()
        listed = ", ".join(f"{r['id']} ({r['agent_name']}, {r['status']})" for r in recent)
        raise NotFound(
            f"run {shown(run_id)} not found; "
            + (f"the most recent runs are {listed}" if recent else "no runs exist yet"),
            kind="run",
        )
    return to_runs(conn, [row])[0]


def list_runs(
    conn: Conn,
    *,
    agent_id: str | None = None,
    status: str | Sequence[str] | None = None,
    limit: int = 20,
    cursor: str | None = None,
    oldest_first: bool = False,
    after_id: str | None = None,
) -> Page[Run]:
    """A page of runs in queue order, newest first (or ``oldest_first``), optionally of one agent and/or in
    one or more statuses. ``after_id`` starts the page after that run, in the same order (Letta's cursors are
    ids)."""
    check_page(limit)
    statuses = [status] if isinstance(status, str) else sorted(set(status or []))
    for one in statuses:
        if one not in STATUSES:
            raise Invalid(f"unknown run status {shown(one)}: use one of {', '.join(STATUSES)}")
    scope: list[Any] = [agent_id, status if isinstance(status, str) else statuses or None]
    if oldest_first:
        scope.append("oldest first")
    after = paging.decode(cursor, "runs", scope, [int])
    if after_id is not None:
        check_ref(after_id, "run")
        found = conn.execute("SELECT seq FROM runs WHERE id = ?", (after_id,)).fetchone()
        if found is None:
            raise NotFound(f"run {shown(after_id)} not found: page after the id of a run a previous page listed")
        after = [found[0]]
    beyond, order = (">", "ASC") if oldest_first else ("<", "DESC")
    where, args = f"seq {beyond} ?", []
    if agent_id is not None:
        where += " AND agent_id = ?"
        args.append(agent_id)
    if statuses:
        where += f" AND status IN ({', '.join('?' * len(statuses))})"
        args += statuses

    def count_after(last: paging.Key) -> int:
        return conn.execute(f"SELECT count(*) FROM runs WHERE {where}", [*last, *args]).fetchone()[0]

    start = after[0] if after else (-MAX_CURSOR if oldest_first else MAX_CURSOR)
    rows = conn.execute(
        f"SELECT * FROM runs WHERE {where} ORDER BY seq {order} LIMIT ?", [start, *args, limit]
    ).fetchall()
    return paging.page_of(
        rows, to_runs(conn, rows), limit, key=lambda r: [r["seq"]], count_after=count_after, listing="runs",
        scope=scope,
    )  # fmt: skip


# -- writing ----------------------------------------------------------------------------------------
def insert_run(
    conn: Conn,
    agent_row: Any,
    text: str,
    *,
    role: str,
    sender: str | None,
    parent_run_id: str | None,
    owner: str,
    waited: bool = False,
    depth: int = 0,
    reply_to: str | None = None,
    call_id: str | None = None,
) -> Run:
    """Persist a queued run for an agent; the process ``owner`` will execute it.

    ``waited``: the parent run is blocked waiting on this one (an edge of the wait-for graph, see
    ``waits``); ``depth``: synchronous waits above it; ``reply_to``: where its reply goes when it ends;
    ``call_id``: the parent's tool call that sends it (see ``sent_run``).
    """
    if not isinstance(text, str) or not text.strip():
        raise Invalid("the message is empty: pass the text to send to the agent")
    check_text(text, "the message", MAX_TEXT)
    if role not in ("user", "system"):
        raise Invalid(f"role must be 'user' or 'system' (got {role!r})")
    if (
        parent_run_id is not None
        and conn.execute("SELECT 1 FROM runs WHERE id = ?", (parent_run_id,)).fetchone() is None
    ):
        raise NotFound(f"parent run {shown(parent_run_id)} not found: pass the id of an existing run, or none")
    run_id, now, text = new_ordered_id("run"), now_iso(), clean_text(text)
    conn.execute(
        "INSERT INTO runs(id, agent_id, agent_name, status, input, role, sender, parent_run_id, owner, created_at, "
        "waited, depth, reply_to, call_id) VALUES (?,?,?,'queued',?,?,?,?,?,?,?,?,?,?)",
        (
            run_id, agent_row["id"], agent_row["name"], text, role, sender, parent_run_id, owner, now,
            int(waited), depth, reply_to, call_id if parent_run_id is not None else None,
        ),
    )  # fmt: skip
    conn.log_change("run", run_id)
    return Run(
        id=run_id,
        agent_id=agent_row["id"],
        agent_name=agent_row["name"],
        status="queued",
        input=text,
        role=role,  # type: ignore[arg-type]
        sender=sender,
        parent_run_id=parent_run_id,
        depth=depth,
        reply_to=reply_to,
        created_at=now,  # type: ignore[arg-type]
    )


def sent_run(conn: Conn, parent_run_id: str, call_id: str, agent_id: str) -> Run | None:
    """The run that tool call ``call_id`` of run ``parent_run_id`` sent to ``agent_id``, if it sent one."""
    row = conn.execute(
        "SELECT * FROM runs WHERE parent_run_id = ? AND call_id = ? AND agent_id = ?",
        (parent_run_id, call_id, agent_id),
    ).fetchone()
    return None if row is None else to_runs(conn, [row])[0]


def live_owners(conn: Conn, owner: Owner) -> set[str]:
    """Ids of the processes that may still be executing runs: fresh heartbeat and, on this host, a live pid."""
    stale = owner.now() - owner.lease_s
    live = {owner.id}
    for r in conn.execute("SELECT id, pid, host, heartbeat FROM processes"):
        if r["heartbeat"] >= stale and not (r["host"] == owner.host and not pid_alive(r["pid"])):
            live.add(r["id"])
    return live


def died(conn: Conn, process_id: str, owner: Owner) -> bool:
    """Whether a process that is not live died, rather than stalled (on this host with its pid alive, e.g. a
    laptop asleep): a stall is no fault of the run it was running."""
    row = conn.execute("SELECT pid, host FROM processes WHERE id = ?", (process_id,)).fetchone()
    return row is None or row["host"] != owner.host or not pid_alive(row["pid"])


def release(conn: Conn, row: Any, *, to_owner: str, crashed: bool) -> str:
    """A running run whose process stopped (``row``): back to the queue, owned by ``to_owner``, to be resumed
    from its last committed step; its new status. ``crashed``: the process died without handing it back.

    It is not resumed when that cannot help: a cancel was asked (it ends cancelled), its parent stopped
    waiting for it by ending (interrupted), or its process died ``MAX_CRASHES`` times running it
    (interrupted, so it cannot take down process after process). The reason is in the run's error.
    """
    run_id, why = row["id"], None
    if row["cancel_requested"]:
        finish_run(conn, run_id, status="cancelled", error=CANCELLED_WHILE_STOPPED, stop_reason="cancelled")
        return "cancelled"
    if row["waited"] and row["parent_run_id"] is not None:
        parent = conn.execute("SELECT status FROM runs WHERE id = ?", (row["parent_run_id"],)).fetchone()
        if parent is not None and parent["status"] in ("completed", "failed", "cancelled", "interrupted"):
            why = (
                f"not resumed after its process stopped: the run waiting for it ({row['parent_run_id']}) has "
                f"{parent['status']}, so nobody would read its reply; send the message again if it is still needed"
            )
    if why is None and crashed and row["crashes"] + 1 >= MAX_CRASHES:
        why = (
            f"not resumed again: the process running it died {row['crashes'] + 1} times (killed or crashed) "
            "before it finished; its committed steps are in the agent's history: look at what its last step "
            "asked for, then send the message again if you still need an answer"
        )
    if why is not None:
        finish_run(conn, run_id, status="interrupted", error=why, stop_reason="interrupted")
        return "interrupted"
    conn.execute(
        "UPDATE runs SET status = 'queued', owner = ?, lease_until = NULL, resumes = resumes + 1, "
        "crashes = crashes + ? WHERE id = ? AND status = 'running'",
        (to_owner, int(crashed), run_id),
    )
    conn.log_change("run", run_id)
    conn.log_change("queued", row["agent_id"])
    return "queued"


def claim_next(conn: Conn, agent_id: str, owner: Owner, *, locked: bool = False) -> ClaimOutcome:
    """Start the agent's oldest queued run if nothing else of it runs and it is ours, its owner died, or
    ``owner.shares_queue`` (any process may start any queued run).

    A running run whose process died goes back to the queue first (``release``): as the oldest, it is the
    one started, and resumed. Returns the ``Claimed`` run, "empty" when nothing is queued, or "blocked"
    when another live process is running the agent or owns the next run (its change wakes us later).

    Claims of one agent take turns (``lock_claims``, unless the caller took it: ``locked``); where another
    writer is claiming the agent right now (PostgreSQL) it is "blocked" too: that claim's change wakes us.
    """
    if not locked and agent_id not in conn.lock_claims([agent_id]):
        return "blocked"
    now, live = owner.now(), None
    for r in conn.execute("SELECT * FROM runs WHERE agent_id = ? AND status = 'running'", (agent_id,)).fetchall():
        if r["owner"] == owner.id:
            return "blocked"  # ours and still going (the caller's bookkeeping prevents this)
        live = live if live is not None else live_owners(conn, owner)
        if (r["lease_until"] or 0) > now and r["owner"] in live:
            return "blocked"
        release(conn, r, to_owner=owner.id, crashed=r["owner"] not in live and died(conn, r["owner"], owner))
    queued = conn.execute(
        "SELECT * FROM runs WHERE agent_id = ? AND status = 'queued' ORDER BY seq LIMIT 2", (agent_id,)
    ).fetchall()
    if not queued:
        return "empty"
    head = queued[0]
    if head["owner"] != owner.id and not owner.shares_queue:
        live = live if live is not None else live_owners(conn, owner)
        if head["owner"] in live:
            return "blocked"
    return Claimed(start_runs(conn, [head["id"]], owner)[head["id"]], len(queued) > 1)


def claim_many(conn: Conn, agent_ids: list[str], owner: Owner) -> list[ClaimOutcome]:
    """``claim_next`` for many agents: those whose queue is simply "a run we may start, nothing running"
    are started with one update; the others (and a repeated agent, which then finds its run running) one
    by one. An agent another writer is claiming right now is "blocked" (see ``claim_next``)."""
    ours = conn.lock_claims(agent_ids)
    active = active_runs(conn, [agent_id for agent_id in agent_ids if agent_id in ours])
    simple = {
        agent_id: runs[0]["id"]
        for agent_id, runs in active.items()
        if runs and (owner.shares_queue or runs[0]["owner"] == owner.id) and all(r["status"] == "queued" for r in runs)
    }
    started = start_runs(conn, list(simple.values()), owner)
    out: list[ClaimOutcome] = []
    for agent_id in agent_ids:
        run = started.pop(simple.get(agent_id, ""), None)
        if agent_id not in ours:
            out.append("blocked")
        elif run is None:
            out.append(claim_next(conn, agent_id, owner, locked=True))
        else:
            out.append(Claimed(run, len(active[agent_id]) > 1))
    return out


def active_runs(conn: Conn, agent_ids: list[str]) -> dict[str, list[Any]]:
    """The running and queued runs of each of these agents, oldest first (claiming many at once)."""
    out: dict[str, list[Any]] = {agent_id: [] for agent_id in agent_ids}
    if not agent_ids:
        return out
    marks = ",".join("?" * len(agent_ids))
    for row in conn.execute(
        f"SELECT * FROM runs WHERE agent_id IN ({marks}) AND status IN ('running', 'queued') ORDER BY seq",
        agent_ids,
    ):
        out[row["agent_id"]].append(row)
    return out


def start_runs(conn: Conn, run_ids: list[str], owner: Owner) -> dict[str, Run]:
    """Mark queued runs running for ``owner`` (the claim ``claim_next`` makes, for many); the runs by id.
    A resumed run keeps the time it first started."""
    if not run_ids:
        return {}
    now, marks = owner.now(), ",".join("?" * len(run_ids))
    rows = conn.execute(
        f"UPDATE runs SET status = 'running', owner = ?, lease_until = ?, started_at = coalesce(started_at, ?) "
        f"WHERE id IN ({marks}) AND status = 'queued' RETURNING *",
        (owner.id, now + owner.lease_s, now_iso(), *run_ids),
    ).fetchall()
    for row in rows:
        conn.log_change("run", row["id"])
    return {row["id"]: run_of(row, []) for row in rows}


def window_fingerprints(conn: Conn, agent_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(count, newest seq) of each agent's in-context messages: changes whenever its window changes."""
    marks = ",".join("?" * len(agent_ids))
    found = {
        row[0]: (int(row[1]), int(row[2]))
        for row in conn.execute(
            f"SELECT agent_id, count(*), coalesce(max(seq), 0) FROM messages WHERE agent_id IN ({marks}) "
            "AND in_context = 1 GROUP BY agent_id",
            agent_ids,
        )
    }
    return {agent_id: found.get(agent_id, (0, 0)) for agent_id in agent_ids}


def run_state(conn: Conn, run_id: str, owner: Owner) -> RunState:
    """Whether ``owner`` may go on with a run: 'ok', 'cancel' (someone asked), 'lost' (no longer its run) or
    'no_agent' (its agent was deleted meanwhile)."""
    row = conn.execute(
        "SELECT status, owner, cancel_requested, EXISTS(SELECT 1 FROM agents WHERE id = runs.agent_id) AS agent "
        "FROM runs WHERE id = ?" + conn.for_update,  # held to commit: no replica releases it meanwhile
        (run_id,),
    ).fetchone()
    if row is None or row["status"] != "running" or row["owner"] != owner.id:
        return "lost"
    if row["cancel_requested"]:
        return "cancel"
    return "ok" if row["agent"] else "no_agent"


def add_step(conn: Conn, run_id: str, step: RunStep, *, count_usage: bool = True) -> None:
    """Record a completed step and add its tokens to the run's usage (``count_usage=False``: the caller adds
    them itself, as ``finish_run(add_usage=...)`` does in the same update). Logged as a 'step' change: a
    caller waiting on the run through another process hears of the step there."""
    conn.log_change("step", run_id)
    conn.execute(
        "INSERT INTO run_steps(run_id, idx, tool_calls, prompt_tokens, completion_tokens, total_tokens, cached_tokens, "
        "started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            run_id,
            step.index,
            json.dumps([tc.model_dump() for tc in step.tool_calls], ensure_ascii=False),
            step.usage.prompt_tokens,
            step.usage.completion_tokens,
            step.usage.total_tokens,
            step.usage.cached_tokens,
            step.started_at.isoformat(timespec="microseconds"),
            step.finished_at.isoformat(timespec="microseconds"),
        ),
    )
    if count_usage:
        conn.execute(
            "UPDATE runs SET prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?, "
            "total_tokens = total_tokens + ?, cached_tokens = cached_tokens + ? WHERE id = ?",
            (
                step.usage.prompt_tokens,
                step.usage.completion_tokens,
                step.usage.total_tokens,
                step.usage.cached_tokens,
                run_id,
            ),
        )
    conn.log_change("run", run_id)


def finish_run(
    conn: Conn,
    run_id: str,
    *,
    status: str,
    reply: str | None = None,
    error: str | None = None,
    stop_reason: str,
    expect: tuple[str, ...] = ("running",),
    add_usage: RunUsage | None = None,
    owner: str | None = None,
) -> Any | None:
    """Move a run to a final status, only if it is still in one of ``expect`` (and, given ``owner``, still that
    process's: one whose run was taken over must not end it): its row as ended, else None. ``add_usage``:
    tokens to add to the run's usage in the same update (its last step's).

    Every run ends here, so this is also where its reply is routed (see ``replies``): in the same
    transaction, whichever process ends it and however (completed, failed, cancelled, interrupted).
    """
    marks = ",".join("?" * len(expect))
    usage = add_usage or RunUsage()
    ended = conn.execute(
        "UPDATE runs SET status = ?, reply = ?, error = ?, stop_reason = ?, finished_at = ?, lease_until = NULL, "
        "prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?, "
        "total_tokens = total_tokens + ?, cached_tokens = cached_tokens + ? "
        f"WHERE id = ? AND status IN ({marks}){'' if owner is None else ' AND owner = ?'} RETURNING *",
        (
            status, reply, error, stop_reason, now_iso(), usage.prompt_tokens, usage.completion_tokens,
            usage.total_tokens, usage.cached_tokens, run_id, *expect, *([] if owner is None else [owner]),
        ),
    ).fetchone()  # fmt: skip
    if ended is None:
        return None
    conn.log_change("run", run_id)
    if ended["reply_to"] is not None:
        _route_reply(conn, ended)
    return ended


def _route_reply(conn: Conn, ended: Any) -> None:
    if ended["reply_to"] == HOST:
        conn.log_change("inbox", ended["id"])  # the MCP surface tells subscribers of letta://inbox
        return
    sender = conn.execute("SELECT * FROM agents WHERE id = ?", (ended["reply_to"],)).fetchone()
    if sender is None:
        return  # the sender was deleted: the reply stays on the run
    # Owned by whichever process ends the run (it is alive now); "queued" wakes its scheduler.
    insert_run(
        conn, sender, replies.reply_notice(ended), role="system", sender=ended["agent_id"],
        parent_run_id=ended["id"], owner=conn.origin,
    )  # fmt: skip
    conn.log_change("queued", sender["id"])


def request_cancel(conn: Conn, run_id: str) -> CancelOutcome:
    """Cancel a queued run at once, or flag a running one for its process; 'done' if it had finished."""
    check_ref(run_id, "run")
    row = conn.execute("SELECT status FROM runs WHERE id = ?" + conn.for_update, (run_id,)).fetchone()
    if row is None:
        get_run(conn, run_id)  # raises NotFound naming recent runs
    if row["status"] == "queued":
        finish_run(
            conn, run_id, status="cancelled", error="cancelled before it started", stop_reason="cancelled",
            expect=("queued",),
        )  # fmt: skip
        return "cancelled"
    if row["status"] == "running":
        conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
        conn.log_change("run", run_id)
        return "requested"
    return "done"


def cancel_with_waited(conn: Conn, run_id: str) -> list[tuple[str, CancelOutcome]]:
    """Cancel a run and, recursively, every unfinished run it is waiting on; ``(run id, outcome)`` each.

    The run itself comes first. Runs it sent asynchronously are not waited on and go on.
    """
    outcomes = [(run_id, request_cancel(conn, run_id))]
    frontier = [run_id]
    while frontier:
        marks = ",".join("?" * len(frontier))
        children = [
            r[0]
            for r in conn.execute(
                f"SELECT id FROM runs WHERE parent_run_id IN ({marks}) AND waited = 1 "
                "AND status IN ('queued', 'running')",
                frontier,
            )
        ]
        outcomes += [(child, request_cancel(conn, child)) for child in children]
        frontier = children
    return outcomes


# -- processes, leases, recovery --------------------------------------------------------------------
def heartbeat(conn: Conn, owner: Owner, executing: Sequence[str]) -> None:
    """Say this process is alive and extend the leases of the runs it is ``executing``."""
    now = owner.now()
    conn.execute(
        "INSERT INTO processes(id, pid, host, started_at, heartbeat) VALUES (?,?,?,?,?) "
        "ON CONFLICT(id) DO UPDATE SET heartbeat = excluded.heartbeat",
        (owner.id, owner.pid, owner.host, now_iso(), now),
    )
    if executing:
        conn.execute(
            f"UPDATE runs SET lease_until = ? WHERE owner = ? AND status = 'running' AND id IN "
            f"({','.join('?' * len(executing))})",
            (now + owner.lease_s, owner.id, *executing),
        )


def recover(conn: Conn, owner: Owner) -> list[str]:
    """Put running runs whose process died or lease passed back in the queue (``release``: to be resumed);
    adopt queued runs of dead processes.

    Returns the ids of the agents that have queued runs this process now owns.

    Where writers run side by side (PostgreSQL), the runs taken are locked and runs another writer holds
    are passed over (``skip_locked``): two replicas recovering at once split the work, and a run being
    claimed or finished right now is left to that writer.
    """
    now, live = owner.now(), live_owners(conn, owner)
    marks = ",".join("?" * len(live))
    stopped = conn.execute(
        f"SELECT * FROM runs WHERE status = 'running' AND (coalesce(lease_until, 0) <= ? "
        f"OR owner NOT IN ({marks})) ORDER BY seq" + conn.skip_locked,
        (now, *sorted(live)),
    ).fetchall()
    for r in stopped:
        release(conn, r, to_owner=owner.id, crashed=r["owner"] not in live and died(conn, r["owner"], owner))
    adopted = conn.execute(
        f"SELECT id FROM runs WHERE status = 'queued' AND owner NOT IN ({marks}) ORDER BY seq" + conn.skip_locked,
        sorted(live),
    ).fetchall()
    for r in adopted:
        conn.execute("UPDATE runs SET owner = ? WHERE id = ? AND status = 'queued'", (owner.id, r["id"]))
        conn.log_change("run", r["id"])
    conn.execute(f"DELETE FROM processes WHERE id NOT IN ({marks})", sorted(live))
    return [
        r[0]
        for r in conn.execute(
            "SELECT agent_id FROM runs WHERE status = 'queued' AND owner = ? GROUP BY agent_id ORDER BY min(seq)",
            (owner.id,),
        )
    ]


def startable_agents(conn: Conn, limit: int, besides: Sequence[str] = ()) -> list[str]:
    """Up to ``limit`` agents (not those in ``besides``) whose next queued run (any process's) may start now,
    because no run of theirs is running, oldest first: where a process with idle slots takes work from when
    the queue is shared (``Scheduler``). In a write transaction on PostgreSQL each one is locked, as a claim
    would, and one another transaction is claiming right now is passed over: replicas looking at once take
    different agents."""
    # In queue order along the (status, seq) index, so a long queue is not read to its end.
    others = f"AND q.agent_id NOT IN ({','.join('?' * len(besides))}) " if besides else ""
    sql = (
        f"SELECT q.agent_id FROM runs q JOIN agents a ON a.id = q.agent_id WHERE q.status = 'queued' {others}"
        "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.agent_id = q.agent_id AND r.status = 'running') "
        "AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.agent_id = q.agent_id AND o.status = 'queued' "
        "AND o.seq < q.seq) ORDER BY q.seq LIMIT ?"
    )
    rows = conn.execute(sql + conn.skip_locked, (*besides, limit)).fetchall()
    return [r[0] for r in rows]


def forget_process(conn: Conn, owner: Owner) -> None:
    """A clean shutdown: the runs this process was running go back to the queue (``release``), and its row
    goes, so other processes adopt them and its queued runs without waiting for its lease to pass."""
    mine = "SELECT * FROM runs WHERE status = 'running' AND owner = ?" + conn.for_update
    for r in conn.execute(mine, (owner.id,)).fetchall():
        release(conn, r, to_owner=owner.id, crashed=False)
    conn.execute("DELETE FROM processes WHERE id = ?", (owner.id,))


def take_out_of_context(conn: Conn, agent_id: str, seqs: list[int]) -> int:
    """Evict exactly these messages from an agent's context window (compaction; they stay in recall)."""
    if not seqs:
        return 0
    marks = ",".join("?" * len(seqs))
    return conn.execute(
        f"UPDATE messages SET in_context = 0 WHERE agent_id = ? AND in_context = 1 AND seq IN ({marks})",
        (agent_id, *seqs),
    ).rowcount
