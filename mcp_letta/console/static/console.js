// mcp-letta console: one page, no framework, no build step. Every value from the database reaches the page
// as a text node or an attribute set through the DOM (never as HTML), so names and values show as text.
"use strict";
// The drawing helpers (h, s, replace, renderRun, drawTraffic, ...) come from draw.js, loaded first.

const state = { csrf: null, view: null, timer: null };

// -- talking to the server ---------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) { super((body && body.error) || `HTTP ${status}`); this.status = status; this.body = body; }
}
async function api(path, body) {
  const init = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = state.csrf || "";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}
const q = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null)).toString();

function follow() {
  const live = document.getElementById("live");
  const source = new EventSource("/events");
  let opened = false;
  source.addEventListener("open", () => {
    live.textContent = "live";
    // Changes made while the stream was down were not heard: read the current view again.
    if (opened && state.view && state.view.resync) state.view.resync();
    opened = true;
  });
  source.addEventListener("error", () => { live.textContent = "reconnecting…"; });
  source.addEventListener("change", (event) => {
    const changes = JSON.parse(event.data);
    if (state.view && state.view.changed) state.view.changed(changes);
  });
}

// A view re-reads at once when it has not for ``ms``, else at the end of that interval: at most once per
// ``ms`` however many changes arrive, and never later than ``ms`` after one.
function soon(fn, ms = 200) {
  let pending = null, last = 0;
  return () => {
    if (pending !== null) return;
    pending = setTimeout(() => { pending = null; last = Date.now(); fn(); }, Math.max(0, last + ms - Date.now()));
  };
}


// -- views -------------------------------------------------------------------------------------------
function agentsView(main) {
  const text = h("input", { type: "search", id: "filter-text", placeholder: "name or description", "aria-label": "Filter agents by text" });
  const tag = h("input", { type: "search", id: "filter-tag", placeholder: "tag", "aria-label": "Filter agents by tag" });
  const body = h("tbody");
  const count = h("p", { class: "muted", role: "status" });
  const load = async () => {
    try {
      const agents = await api(`/api/agents?${q({ q: text.value.trim(), tag: tag.value.trim() })}`);
      agents.forEach((a) => agentNames.set(a.id, a.name));
      replace(count, `${agents.length} agent${agents.length === 1 ? "" : "s"}`);
      replace(body, agents.map((a) => h("tr", { "data-agent": a.name },
        h("td", {}, h("a", { href: `#/agent/${encodeURIComponent(a.id)}` }, a.name)),
        h("td", {}, a.description || ""), h("td", {}, tags(a.tags)),
        h("td", {}, a.tool ? h("code", {}, a.tool) : h("span", { class: "muted" }, `none: ${a.no_tool_because}`)),
        h("td", {}, String(a.queued)), h("td", {}, String(a.running)), h("td", {}, when(a.last_activity)))));
    } catch (err) { replace(count, problem(err)); }
  };
  const typed = soon(load), live = soon(load, 1000);
  text.addEventListener("input", typed); tag.addEventListener("input", typed);
  replace(main, h("h1", {}, "Agents"), h("div", { class: "filters" }, text, tag), count,
    h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Description", "Tags", "MCP tool", "Queued", "Running", "Last activity"].map((c) => h("th", { scope: "col" }, c)))), body));
  load();
  return { resync: load, changed: (changes) => { if (changes.some((c) => ["agents", "agent", "run"].includes(c.kind))) live(); } };
}

async function cancelRun(run, where) {
  try { await api(`/api/runs/${encodeURIComponent(run.id)}/cancel`, {}); } catch (err) { where.prepend(problem(err)); }
}

function agentView(main, id, tab) {
  const path = `/api/agents/${encodeURIComponent(id)}`;
  const head = h("div");
  const pane = h("section", { "aria-live": "polite" });
  const tabs = [["chat", "Chat"], ["context", "Context window"], ["history", "History"], ["archival", "Archival"]];
  replace(main, head, h("nav", { class: "tabs", "aria-label": "Agent sections" },
    tabs.map(([key, label]) => h("a", { href: `#/agent/${encodeURIComponent(id)}/${key}`, class: key === tab ? "current" : null, "aria-current": key === tab ? "page" : null }, label))), pane);
  const loadHead = async () => {
    try {
      const { agent, tool, no_tool_because } = await api(path);
      agentNames.set(agent.id, agent.name);
      replace(head, h("h1", {}, agent.name), h("p", {}, agent.description || h("span", { class: "muted" }, "no description")),
        h("p", {}, tags(agent.tags), " MCP tool: ", tool ? h("code", {}, tool) : h("span", { class: "muted" }, `none: ${no_tool_because}`)));
    } catch (err) { replace(head, problem(err)); }
  };
  loadHead();
  let inner;
  if (tab === "context") inner = contextPane(pane, path);
  else if (tab === "history") inner = searchPane(pane, `${path}/messages`, "Search the conversation", (m) =>
    h("div", { class: `bubble ${m.role === "assistant" ? "assistant" : m.role === "user" ? "user" : ""}` },
      h("strong", {}, `${m.role}${m.in_context ? "" : " (out of context)"} · ${when(m.created_at)}: `), m.content,
      m.tool_calls.map((c) => h("div", { class: "toolcall" }, `${c.name}(${c.arguments})`))));
  else if (tab === "archival") inner = searchPane(pane, `${path}/archival`, "Search archival memory", (p) =>
    h("div", { class: "run" }, h("div", { class: "muted" }, when(p.created_at), " ", tags(p.tags)), h("div", {}, p.text)));
  else inner = chatPane(pane, id);
  const refreshHead = soon(loadHead);
  return { resync: () => { loadHead(); inner.resync(); },
    changed: (changes) => { if (changes.some((c) => c.kind === "agent" || c.kind === "agents")) refreshHead(); inner.changed(changes); } };
}

function chatPane(pane, id) {
  const list = h("div", { id: "chat" });
  const input = h("textarea", { id: "chat-input", "aria-label": "Message to the agent", placeholder: "Write a message… (Ctrl+Enter sends)" });
  const send = async () => {
    const message = input.value;
    if (!message.trim()) return;
    try { await api(`/api/agents/${encodeURIComponent(id)}/messages`, { message }); input.value = ""; load(); }
    catch (err) { list.append(problem(err)); }
  };
  input.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(); });
  const load = async () => {
    try {
      const runs = await api(`/api/runs?${q({ agent: id, limit: 20 })}`);
      replace(list, runs.reverse().map((run) => renderRun(run, (r) => cancelRun(r, list))));
    } catch (err) { replace(list, problem(err)); }
  };
  replace(pane, list, input, h("p", {}, h("button", { onclick: send, id: "chat-send" }, "Send")));
  load();
  const refresh = soon(load, 100);
  return { resync: load, changed: (changes) => { if (changes.some((c) => c.kind === "run")) refresh(); } };
}

function contextPane(pane, path) {
  const load = async () => {
    try {
      const w = await api(`${path}/context`);
      const row = (label, tokens) => h("tr", {}, h("th", { scope: "row" }, label), h("td", {}, `${tokens} tokens`), h("td", {}, bar(tokens, w.context_window, label)));
      replace(pane,
        h("h2", {}, `Estimated ${w.total_tokens} of ${w.context_window} tokens (summarised above ${w.summarize_at})`),
        h("table", { id: "context-sections" }, row("System prompt", w.system_tokens), row("Core memory", w.memory_tokens),
          row("Tool definitions", w.tools_tokens), row(`Messages (${w.messages.length} in context)`, w.messages_tokens), row("Total", w.total_tokens)),
        h("h2", {}, "System prompt"), h("pre", {}, w.system),
        h("h2", {}, "Memory blocks"),
        h("table", {}, h("thead", {}, h("tr", {}, ["Label", "Size", "", "Version", "Value"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, w.blocks.map((b) => h("tr", {}, h("td", {}, h("a", { href: `#/block/${encodeURIComponent(b.id)}` }, b.label)),
            h("td", {}, `${b.value.length} / ${b.limit} chars`), h("td", {}, bar(b.value.length, b.limit, `${b.label} size`)),
            h("td", {}, String(b.version)), h("td", {}, h("pre", {}, b.value)))))),
        h("h2", {}, "Core memory as the prompt shows it"), h("pre", {}, w.memory),
        h("h2", {}, `Tools (${w.tools.length})`),
        w.tools.map((t) => h("details", {}, h("summary", {}, h("code", {}, t.function.name), " ", t.function.description.split("\n")[0]),
          h("pre", {}, JSON.stringify(t.function.parameters, null, 2)))),
        h("h2", {}, "Compaction"),
        h("p", {}, `${w.out_of_context} message${w.out_of_context === 1 ? "" : "s"} out of context (kept in recall memory).`),
        w.summary ? h("pre", {}, w.summary) : h("p", { class: "muted" }, "Nothing summarised yet."),
        h("h2", {}, "In-context history"),
        w.messages.map((m) => h("div", { class: `bubble ${m.role === "assistant" ? "assistant" : m.role === "user" ? "user" : ""}` },
          h("strong", {}, `${m.role}: `), m.content, m.tool_calls.map((c) => h("div", { class: "toolcall" }, `${c.name}(${c.arguments})`)))));
    } catch (err) { replace(pane, problem(err)); }
  };
  load();
  const refresh = soon(load, 500);
  return { resync: load, changed: (changes) => { if (changes.some((c) => c.kind === "agent" || c.kind === "block" || c.kind === "run")) refresh(); } };
}

function searchPane(pane, path, label, render) {
  const input = h("input", { type: "search", "aria-label": label, placeholder: label });
  const list = h("div");
  const load = async () => {
    try { replace(list, (await api(`${path}?${q({ q: input.value.trim() })}`)).map(render)); }
    catch (err) { replace(list, problem(err)); }
  };
  const refresh = soon(load);
  input.addEventListener("input", refresh);
  replace(pane, h("div", { class: "filters" }, input), list);
  load();
  return { resync: load, changed: (changes) => { if (!input.value && changes.some((c) => c.kind === "agent" || c.kind === "run")) refresh(); } };
}

function blocksView(main) {
  const body = h("tbody");
  const load = async () => {
    try {
      replace(body, (await api("/api/blocks")).map((b) => h("tr", { "data-block": b.label },
        h("td", {}, h("a", { href: `#/block/${encodeURIComponent(b.id)}` }, b.label)), h("td", {}, String(b.version)),
        h("td", {}, b.agents.join(", ")), h("td", {}, `${b.value.length} / ${b.limit}`), h("td", {}, b.updated_by || ""),
        h("td", {}, when(b.updated_at)), h("td", {}, h("pre", {}, b.value.length > 200 ? `${b.value.slice(0, 200)}…` : b.value)))));
    } catch (err) { replace(body, h("tr", {}, h("td", {}, problem(err)))); }
  };
  replace(main, h("h1", {}, "Memory blocks"), h("table", {}, h("thead", {}, h("tr", {},
    ["Label", "Version", "Agents", "Chars", "Last writer", "Updated", "Value"].map((c) => h("th", { scope: "col" }, c)))), body));
  load();
  const refresh = soon(load, 300);
  return { resync: load, changed: (changes) => { if (changes.some((c) => c.kind === "block")) refresh(); } };
}

// Line diff (longest common subsequence): enough for block values, which are at most a few thousand chars.
function diffLines(before, after) {
  const a = before === null || before === undefined ? [] : before.split("\n"), b = after.split("\n");
  if (a.length * b.length > 250000) return [...a.map((l) => ["-", l]), ...b.map((l) => ["+", l])];
  const dp = Array.from({ length: a.length + 1 }, () => new Int32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) for (let j = b.length - 1; j >= 0; j--)
    dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out = []; let i = 0, j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) { out.push([" ", a[i]]); i++; j++; }
    else if (dp[i + 1][j] >= dp[i][j + 1]) out.push(["-", a[i++]]);
    else out.push(["+", b[j++]]);
  }
  while (i < a.length) out.push(["-", a[i++]]);
  while (j < b.length) out.push(["+", b[j++]]);
  return out;
}

function blockView(main, id) {
  const head = h("div"), notice = h("div", { role: "status" }), conflict = h("div", { role: "alert" }), history = h("div");
  const editor = h("textarea", { id: "block-editor", "aria-label": "Block value" });
  const save = h("button", { id: "block-save" }, "Save");
  let read = null; // the block as the editor last loaded it
  let dirty = false;
  editor.addEventListener("input", () => { dirty = true; });
  const load = async () => {
    try {
      const { block, history: changes } = await api(`/api/blocks/${encodeURIComponent(id)}`);
      replace(head, h("h1", {}, `Block ${block.label}`),
        h("p", {}, "Version ", h("strong", { id: "block-version" }, String(block.version)), ` · ${block.value.length} / ${block.limit} chars · shared by `,
          block.agents.length ? block.agents.join(", ") : "no agent", block.read_only ? " · read-only for agents" : ""),
        block.description ? h("p", { class: "muted" }, block.description) : null);
      if (!dirty || read === null) { editor.value = block.value; read = block; replace(notice); }
      else if (block.version !== read.version) {
        replace(notice, h("div", { class: "notice" }, `Someone wrote version ${block.version} while you edit version ${read.version}; saving will show a conflict.`));
      }
      replace(history, h("h2", {}, "History"), changes.map((c) => h("div", { class: "run" },
        h("div", {}, h("strong", {}, `v${c.version}`), ` ${c.op} by ${c.writer || "unknown"} · ${when(c.at)}`),
        h("div", { class: "diff" }, diffLines(c.old_value, c.new_value).map(([sign, line]) =>
          h("span", { class: sign === "-" ? "diff-del" : sign === "+" ? "diff-add" : "" }, `${sign} ${line}`))))));
    } catch (err) { replace(head, problem(err)); }
  };
  save.addEventListener("click", async () => {
    replace(conflict);
    try {
      read = await api(`/api/blocks/${encodeURIComponent(id)}`, { value: editor.value, expected_version: read.version });
      dirty = false; load();
    } catch (err) {
      if (err.status !== 409) { replace(conflict, problem(err)); return; }
      const take = h("button", { class: "secondary", onclick: () => { dirty = false; replace(conflict); load(); } }, "Discard my edit and load the current value");
      replace(conflict, h("div", { class: "conflict", id: "block-conflict" }, h("strong", {}, "Not saved: "), err.message,
        h("p", {}, `The current value (version ${err.body.current_version}):`), h("pre", {}, err.body.current_value ?? ""), take));
    }
  });
  replace(main, head, notice, conflict, editor, h("p", {}, save), history);
  load();
  const refresh = soon(load, 150);
  return { resync: load, changed: (changes) => { if (changes.some((c) => c.kind === "block" && c.ref === id)) refresh(); } };
}

function runsView(main) {
  const status = h("select", { "aria-label": "Filter runs by status" }, ["", "queued", "running", "completed", "failed", "cancelled", "interrupted"].map((v) => h("option", { value: v }, v || "any status")));
  const body = h("tbody"), timeline = h("div", { class: "diagram" });
  const load = async () => {
    try {
      const runs = await api(`/api/runs?${q({ status: status.value, limit: 200 })}`);
      runs.forEach((r) => agentNames.set(r.agent_id, r.agent_name));
      replace(body, runs.map((r) => h("tr", { "data-run": r.id },
        h("td", {}, h("a", { href: `#/run/${r.id}` }, r.id)), h("td", {}, h("a", { href: `#/agent/${encodeURIComponent(r.agent_id)}` }, r.agent_name)),
        h("td", {}, statusEl(r.status)), h("td", {}, who(r.sender)), h("td", {}, r.parent_run_id ? h("a", { href: `#/run/${r.parent_run_id}` }, r.parent_run_id) : ""),
        h("td", {}, duration(r)), h("td", {}, String(r.usage.total_tokens)), h("td", {}, when(r.created_at)),
        h("td", {}, done(r) ? "" : h("button", { class: "secondary", onclick: () => cancelRun(r, main) }, "Cancel")))));
      replace(timeline, drawTimeline(runs));
    } catch (err) { replace(body, h("tr", {}, h("td", {}, problem(err)))); }
  };
  status.addEventListener("change", load);
  replace(main, h("h1", {}, "Runs"), h("div", { class: "filters" }, status),
    h("h2", {}, "Timeline per agent"), h("p", { class: "legend muted" }, h("span", {}, "light: queued"), h("span", {}, "dark: running")), timeline,
    h("h2", {}, "Newest runs"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Run", "Agent", "Status", "Sender", "Parent run", "Duration", "Tokens", "Created", ""].map((c) => h("th", { scope: "col" }, c)))), body));
  load();
  const refresh = soon(load, 500);
  return { resync: load, changed: (changes) => { if (changes.some((c) => c.kind === "run")) refresh(); } };
}

// Queued and running spans of each agent's runs on one time axis: the busiest lane is the bottleneck.
function drawTimeline(runs) {
  if (!runs.length) return h("p", { class: "muted" }, "No runs yet.");
  const now = Date.now();
  const t = (iso) => (iso ? new Date(iso).getTime() : now);
  const start = Math.min(...runs.map((r) => t(r.created_at))), end = Math.max(...runs.map((r) => t(r.finished_at)));
  const lanes = [...new Set(runs.map((r) => r.agent_name))].sort();
  const width = 900, left = 160, lane = 18, span = Math.max(1, end - start);
  const x = (ms) => left + ((ms - start) / span) * (width - left - 10);
  const svg = s("svg", { width, height: lanes.length * lane + 24, role: "img", "aria-label": "Queued and running time per agent" });
  lanes.forEach((name, i) => svg.append(s("text", { x: 4, y: i * lane + 14 }, name.length > 22 ? `${name.slice(0, 21)}…` : name)));
  for (const r of runs) {
    const y = lanes.indexOf(r.agent_name) * lane + 3;
    const queuedEnd = r.started_at ? t(r.started_at) : t(r.finished_at);
    svg.append(s("rect", { class: "span-queued", x: x(t(r.created_at)), y, height: lane - 6, width: Math.max(1, x(queuedEnd) - x(t(r.created_at))) },
      s("title", {}, `${r.agent_name} ${r.id}: queued`)));
    if (r.started_at) svg.append(s("rect", { class: "span-running", x: x(t(r.started_at)), y, height: lane - 6, width: Math.max(1, x(t(r.finished_at)) - x(t(r.started_at))) },
      s("title", {}, `${r.agent_name} ${r.id}: ${r.status} ${duration(r)}`)));
  }
  svg.append(s("text", { x: left, y: lanes.length * lane + 18 }, `${((end - start) / 1000).toFixed(1)} s shown`));
  return svg;
}

function runView(main, id) {
  const load = async () => {
    try {
      const run = await api(`/api/runs/${encodeURIComponent(id)}`);
      replace(main, h("h1", {}, `Run ${run.id}`),
        h("table", {}, [["Agent", h("a", { href: `#/agent/${encodeURIComponent(run.agent_id)}` }, run.agent_name)], ["Status", statusEl(run.status)],
          ["Stop reason", run.stop_reason || ""], ["Sender", who(run.sender)], ["Parent run", run.parent_run_id ? h("a", { href: `#/run/${run.parent_run_id}` }, run.parent_run_id) : ""],
          ["Reply goes to", run.reply_to ? who(run.reply_to) : "the caller"], ["Created", when(run.created_at)], ["Duration", duration(run)],
          ["Tokens", `${run.usage.total_tokens} (${run.usage.prompt_tokens} prompt, ${run.usage.completion_tokens} completion)`]]
          .map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v)))),
        renderRun(run, (r) => cancelRun(r, main)));
    } catch (err) { replace(main, problem(err)); }
  };
  load();
  const refresh = soon(load, 100);
  return { resync: load, changed: (changes) => { if (changes.some((c) => c.kind === "run" && c.ref === id)) refresh(); } };
}

function trafficView(main) {
  const diagram = h("div", { class: "diagram" }), pairs = h("tbody");
  const expanded = new Set();
  let runs = [];
  const redraw = () => replace(diagram, runs.length ? drawTraffic(runs, expanded, redraw) : h("p", { class: "muted" }, "No messages yet."));
  const load = async () => {
    try {
      runs = (await api("/api/runs?limit=300")).reverse();
      runs.forEach((r) => agentNames.set(r.agent_id, r.agent_name));
      redraw();
      const metrics = await api("/api/metrics");
      replace(pairs, metrics.pairs.map((p) => h("tr", {}, h("td", {}, who(p.sender)), h("td", {}, who(p.receiver)), h("td", {}, String(p.messages)),
        h("td", { class: p.errors ? "error" : "" }, String(p.errors)), h("td", {}, String(p.pending)),
        h("td", {}, p.latency_p50_ms === null ? "" : `${Math.round(p.latency_p50_ms)} ms`), h("td", {}, p.latency_p95_ms === null ? "" : `${Math.round(p.latency_p95_ms)} ms`), h("td", {}, String(p.tokens)))));
    } catch (err) { replace(diagram, problem(err)); }
  };
  replace(main, h("h1", {}, "Traffic"),
    h("p", { class: "legend muted" }, h("span", {}, "solid arrow: send and wait"), h("span", {}, "open head: async"), h("span", {}, "dashed: reply"),
      h("span", {}, "✕ red: failed"), h("span", {}, "orange: pending"), h("span", {}, "Enter or click: open the run or expand a broadcast")),
    h("div", { class: "cols" }, diagram, h("div", {}, h("h2", {}, "Per sender and receiver"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Sender", "Receiver", "Messages", "Errors", "Pending", "p50", "p95", "Tokens"].map((c) => h("th", { scope: "col" }, c)))), pairs))));
  load();
  const refresh = soon(load, 1000);
  return { resync: load, changed: (changes) => { if (changes.some((c) => c.kind === "run" || c.kind === "agents")) refresh(); } };
}

// -- routing -------------------------------------------------------------------------------------------
function route() {
  const main = document.getElementById("main");
  const [section, id, tab] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  document.querySelectorAll("header nav a").forEach((a) => {
    const current = a.dataset.section === (section === "agent" ? "agents" : section === "block" ? "blocks" : section === "run" ? "runs" : section || "agents");
    a.classList.toggle("current", current);
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  if (section === "agent" && id) state.view = agentView(main, id, tab || "chat");
  else if (section === "blocks") state.view = blocksView(main);
  else if (section === "block" && id) state.view = blockView(main, id);
  else if (section === "runs") state.view = runsView(main);
  else if (section === "run" && id) state.view = runView(main, id);
  else if (section === "traffic") state.view = trafficView(main);
  else state.view = agentsView(main);
}

async function start() {
  try { state.csrf = (await api("/api/session")).csrf; } catch (err) { replace(document.getElementById("main"), problem(err)); return; }
  window.addEventListener("hashchange", route);
  route();
  follow();
}
start();
