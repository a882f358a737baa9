// mcp-letta views inside an MCP host (MCP Apps): the traffic between agents, one agent, one run. The drawing
// comes from draw.js (the console's), inlined before this script. The view talks only to its host, over the
// Apps bridge (JSON-RPC 2.0 by postMessage): the host hands it a tool result to show, and the view calls our
// tools through the host to refresh and to follow a run while it goes on. It opens no connection itself.
"use strict";

const PROTOCOL = "2026-01-26"; // the MCP Apps protocol version this view speaks
const POLL_MS = 1000; // while something shown is still running, ask again this often
const REFRESH = "refresh_view"; // the tool views call (hidden from the model)
const main = document.getElementById("main");
const view = { data: null, back: [], timer: null, expanded: new Set() };

// -- the Apps bridge ----------------------------------------------------------------------------------
const bridge = { next: 1, waiting: new Map() };
const post = (message) => window.parent.postMessage({ jsonrpc: "2.0", ...message }, "*");
function request(method, params) {
  const id = bridge.next++;
  post({ id, method, params });
  return new Promise((resolve, reject) => bridge.waiting.set(id, { resolve, reject }));
}
const notify = (method, params) => post({ method, params });
const textOf = (result) => (result.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");

window.addEventListener("message", (event) => {
  if (event.source !== window.parent) return; // only the host speaks to a view
  const m = event.data;
  if (!m || m.jsonrpc !== "2.0") return;
  if (m.method === undefined) { // a response to one of our requests
    const waiting = bridge.waiting.get(m.id);
    if (!waiting) return;
    bridge.waiting.delete(m.id);
    if (m.error) waiting.reject(new Error(m.error.message || "the host refused the request"));
    else waiting.resolve(m.result);
    return;
  }
  if (m.id !== undefined) { // the host's requests: ping and teardown need nothing from us but an answer
    if (m.method === "ping" || m.method === "ui/resource-teardown") post({ id: m.id, result: {} });
    else post({ id: m.id, error: { code: -32601, message: `${m.method} is not supported by this view` } });
    if (m.method === "ui/resource-teardown") clearTimeout(view.timer);
    return;
  }
  if (m.method === "ui/notifications/tool-result") showResult(m.params);
  else if (m.method === "ui/notifications/tool-cancelled") replace(main, problem(new Error("The tool call was cancelled.")));
});

async function callTool(name, args) {
  const result = await request("tools/call", { name, arguments: args });
  if (result.isError) throw new Error(textOf(result) || `${name} failed`);
  return result.structuredContent;
}

// -- showing a picture ------------------------------------------------------------------------------------
function showResult(result) {
  if (result.isError) { replace(main, problem(new Error(textOf(result) || "the tool failed"))); return; }
  if (!result.structuredContent) { replace(main, h("pre", {}, textOf(result))); return; }
  show(result.structuredContent);
}

function show(data) {
  clearTimeout(view.timer);
  view.data = data;
  for (const [id, name] of Object.entries(data.names || {})) agentNames.set(id, name);
  const draw = { traffic: trafficPicture, agent: agentPicture, run: runPicture }[data.view];
  replace(main, toolbar(data), draw ? draw(data) : problem(new Error(`unknown view ${data.view}`)));
  if (data.live) view.timer = setTimeout(refresh, POLL_MS);
}

const argsOf = (data) => ({
  traffic: { view: "traffic", minutes: data.minutes ?? undefined, run_id: data.run_id ?? undefined },
  agent: { view: "agent", agent: data.agent && data.agent.id },
  run: { view: "run", run_id: data.run && data.run.id },
}[data.view]);

async function refresh() {
  if (!view.data) return;
  try { show(await callTool(REFRESH, argsOf(view.data))); }
  catch (err) { main.prepend(problem(err)); }
}

async function open(args) { // another picture in this frame (a run from the traffic or the agent); Back returns
  clearTimeout(view.timer);
  const from = view.data;
  try { const data = await callTool(REFRESH, args); view.back.push(from); show(data); }
  catch (err) { main.prepend(problem(err)); }
}

function toolbar(data) {
  const back = view.back.length
    ? h("button", { class: "secondary", onclick: () => show(view.back.pop()) }, "Back") : null;
  return h("div", { class: "toolbar" }, back, h("button", { class: "secondary", onclick: refresh }, "Refresh"),
    h("span", { class: "updated muted", role: "status" },
      `${data.live ? "following · " : ""}updated ${new Date().toLocaleTimeString()}`));
}

const openRun = (run) => open({ view: "run", run_id: run.id });
const runButton = (run) => h("a", { href: "#", class: "muted", onclick: (e) => { e.preventDefault(); openRun(run); } }, run.id);

function trafficPicture(data) {
  const diagram = h("div", { class: "diagram" });
  const runs = data.runs;
  const redraw = () => replace(diagram, runs.length ? drawTraffic(runs, view.expanded, redraw, openRun) : h("p", { class: "muted" }, "No messages."));
  redraw();
  const scope = data.run_id ? `Run ${data.run_id} and the runs it waited on` : `The last ${data.minutes} minute${data.minutes === 1 ? "" : "s"}`;
  return h("section", {}, h("h1", {}, "Traffic"),
    h("p", { class: "muted" }, `${scope}: ${runs.length} message${runs.length === 1 ? "" : "s"}${data.truncated ? " (the first ones only)" : ""}.`),
    h("p", { class: "legend muted" }, h("span", {}, "solid arrow: send and wait"), h("span", {}, "open head: async"), h("span", {}, "dashed: reply"),
      h("span", {}, "✕ red: failed"), h("span", {}, "orange: pending"), h("span", {}, "click an arrow: its run")),
    diagram);
}

function agentPicture(data) {
  const a = data.agent;
  const blocks = h("table", { id: "blocks" }, h("thead", {}, h("tr", {}, ["Block", "Size", "", "Version", "Value"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, data.blocks.map((b) => h("tr", { "data-block": b.label },
      h("td", {}, b.label, b.read_only ? h("span", { class: "muted" }, " (read-only)") : null),
      h("td", {}, bar(b.chars, b.limit, `${b.label}: ${b.chars} of ${b.limit} characters`)),
      h("td", { class: b.chars >= 0.9 * b.limit ? "error" : "muted" }, `${b.chars} / ${b.limit}`),
      h("td", {}, String(b.version)), h("td", {}, h("pre", {}, b.value))))));
  const runs = h("table", { id: "runs" }, h("thead", {}, h("tr", {}, ["Run", "Status", "Input", "Reply", "Duration"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, data.runs.map((r) => h("tr", { "data-run": r.id }, h("td", {}, runButton(r)), h("td", {}, statusEl(r.status)),
      h("td", {}, r.input.length > 120 ? `${r.input.slice(0, 119)}…` : r.input),
      h("td", {}, r.reply === null ? (r.error || "") : r.reply.length > 120 ? `${r.reply.slice(0, 119)}…` : r.reply), h("td", {}, duration(r))))));
  return h("section", {}, h("h1", {}, a.name), h("p", {}, a.description || h("span", { class: "muted" }, "no description"), " ", tags(a.tags)),
    h("h2", {}, "Memory blocks"), data.blocks.length ? blocks : h("p", { class: "muted" }, "No blocks."),
    h("h2", {}, "Recent runs"), data.runs.length ? runs : h("p", { class: "muted" }, "No runs yet."));
}

function runPicture(data) {
  const run = data.run;
  const facts = [["Agent", run.agent_name], ["Status", statusEl(run.status)], ["Stop reason", run.stop_reason || ""], ["Sender", who(run.sender)],
    ["Parent run", run.parent_run_id ? runButton({ id: run.parent_run_id }) : ""], ["Duration", duration(run)],
    ["Tokens", `${run.usage.total_tokens} (${run.usage.prompt_tokens} prompt, ${run.usage.completion_tokens} completion)`]];
  const steps = h("ol", { class: "steps", id: "steps" }, run.steps.map((step) => h("li", { "data-step": step.index },
    `${step.tool_calls.length ? step.tool_calls.map((c) => `${c.name}${c.ok ? "" : " ✕"}`).join(", ") : "reply"} · ${step.usage.total_tokens} tokens · ${duration({ ...step, done: true })}`)));
  return h("section", {}, h("h1", {}, `Run ${run.id}`),
    h("table", { class: "facts" }, facts.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v)))),
    h("h2", {}, `Steps (${run.steps.length})`), run.steps.length ? steps : h("p", { class: "muted" }, done(run) ? "No steps." : "No step finished yet."),
    renderRun(run, null, (r) => h("span", { class: "muted" }, r.id)));
}

// -- start: the handshake with the host; it then sends the tool's result ----------------------------------
new ResizeObserver(() => notify("ui/notifications/size-changed", {
  width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight })).observe(document.body);

request("ui/initialize", { appInfo: { name: "mcp-letta", version: document.body.dataset.version }, appCapabilities: {}, protocolVersion: PROTOCOL })
  .then(() => notify("ui/notifications/initialized", {}))
  .catch((err) => replace(main, problem(err)));
