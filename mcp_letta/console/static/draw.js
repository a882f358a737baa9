// mcp-letta drawing: the DOM helpers, formatting, a run's steps and the traffic sequence diagram, shared by the
// web console (console.js) and the views shown inside MCP hosts (mcp_letta/server/apps.py inlines this file).
// Every value from the database reaches the page as a text node or an attribute set through the DOM (never as
// HTML), so names and values show as text.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

// -- DOM building: strings become text nodes; no innerHTML anywhere ---------------------------------
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}
function s(tag, props, ...children) {
  const el = document.createElementNS(SVG, tag);
  setProps(el, props);
  append(el, children);
  return el;
}
function setProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}
function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}
function replace(el, ...children) { el.replaceChildren(); append(el, children); return el; }

// -- formatting ------------------------------------------------------------------------------------
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const ms = (a, b) => (a && b ? new Date(b) - new Date(a) : null);
function duration(run) {
  const end = run.finished_at || (run.done ? null : new Date().toISOString());
  const d = ms(run.started_at || run.created_at, end);
  return d === null ? "" : d < 1000 ? `${d} ms` : `${(d / 1000).toFixed(1)} s`;
}
const done = (run) => ["completed", "failed", "cancelled", "interrupted"].includes(run.status);
const statusEl = (status) => h("span", { class: `status ${status}` }, status);
function bar(used, limit, label) {
  const pct = limit ? Math.min(100, (100 * used) / limit) : 0;
  const span = h("span"); span.style.width = `${pct}%`;
  return h("div", { class: used > limit ? "bar over" : "bar", role: "meter", "aria-valuenow": used, "aria-valuemin": 0,
    "aria-valuemax": limit, "aria-label": label, title: `${used} / ${limit}` }, span);
}
function tags(list) { return (list || []).map((t) => h("span", { class: "tag" }, t)); }
function problem(err) { return h("p", { class: "error", role: "alert" }, err.message || String(err)); }
const agentNames = new Map(); // id -> name, learned from every listing seen
const who = (id) => (id === null || id === undefined || id === "host" ? "host" : agentNames.get(id) || id);

// -- one run: its input, each tool call with its result, the reply or error ------------------------------
// ``onCancel(run)``, when given, adds a Cancel button to an unfinished run; ``runLink(run)`` is the run id's
// element (the console links it to the run's page).
function renderRun(run, onCancel, runLink = (r) => h("a", { href: `#/run/${r.id}`, class: "muted" }, r.id)) {
  const parts = [h("div", { class: "bubble user" }, h("strong", {}, run.role === "system" ? "system: " : "you: "), run.input)];
  for (const step of run.steps) {
    for (const call of step.tool_calls) {
      parts.push(h("div", { class: call.ok ? "toolcall" : "toolcall failed", "data-tool": call.name },
        `${call.name}(${call.arguments})\n→ ${call.ok ? "" : "failed: "}${call.result_preview}`));
    }
  }
  if (run.reply !== null) parts.push(h("div", { class: "bubble assistant", "data-reply": "" }, run.reply));
  if (run.error) parts.push(h("div", { class: "bubble error", role: "alert" }, run.error));
  return h("article", { class: "run", "data-run": run.id, "aria-label": `run ${run.id}` },
    h("div", {}, statusEl(run.status), " ", runLink(run), " ",
      h("span", { class: "muted" }, `${duration(run)} · ${run.usage.total_tokens} tokens`), " ",
      done(run) || !onCancel ? null : h("button", { class: "secondary", onclick: () => onCancel(run) }, "Cancel")),
    parts);
}

// -- traffic: a sequence diagram of who sent what to whom ---------------------------------------------
const GROUP_AT = 5; // a fan-out to this many recipients or more is drawn as one grouped arrow
const MESSAGING = /^(send_message_to_agent|ask_)/; // tools by which an agent messages others

// Send and reply events in time order; a broadcast's sends (same sender, parent and text, close in time)
// and their replies become one grouped event each unless the user expanded the group.
function trafficEvents(runs, expanded) {
  const sends = [], groups = new Map();
  for (const r of runs) {
    const key = `${r.sender || "host"}|${r.parent_run_id || ""}|${r.input}`;
    const g = groups.get(key);
    if (g && Math.abs(new Date(r.created_at) - new Date(g.at)) < 2000) g.runs.push(r);
    else { const fresh = { key: `${key}|${r.id}`, at: r.created_at, runs: [r] }; groups.set(key, fresh); sends.push(fresh); }
  }
  const events = [];
  for (const g of sends) {
    if (g.runs.length >= GROUP_AT && !expanded.has(g.key)) {
      events.push({ type: "fanout", at: g.at, group: g });
      const finished = g.runs.filter(done);
      if (finished.length) events.push({ type: "fanin", at: finished.map((r) => r.finished_at).sort().at(-1), group: g });
    } else {
      for (const r of g.runs) {
        events.push({ type: "send", at: r.created_at, run: r });
        if (done(r)) events.push({ type: "reply", at: r.finished_at, run: r });
      }
    }
  }
  for (const r of runs) {  // a message an agent's tool could not send (a refused cycle, a failed callee)
    for (const step of r.steps) for (const call of step.tool_calls) {
      if (!call.ok && MESSAGING.test(call.name)) events.push({ type: "refused", at: step.finished_at, run: r, call });
    }
  }
  return events.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
}

// ``openRun(run)`` is what clicking (or Enter on) a run's arrow does; the console opens the run's page.
function drawTraffic(runs, expanded, redraw, openRun = (run) => { location.hash = `#/run/${run.id}`; }) {
  const events = trafficEvents(runs, expanded);
  const lanes = ["host"];
  const lane = (id) => { const k = id || "host"; if (!lanes.includes(k)) lanes.push(k); return lanes.indexOf(k); };
  const groupLane = "(group)";
  for (const e of events) {
    if (e.run) { lane(e.run.sender); lane(e.run.agent_id); } else { lane(e.group.runs[0].sender); if (!lanes.includes(groupLane)) lanes.push(groupLane); }
  }
  const colW = 140, rowH = 28, top = 44;
  const cx = (i) => 70 + i * colW;
  const width = cx(lanes.length - 1) + 160, height = top + events.length * rowH + 20;
  const svg = s("svg", { width, height, id: "traffic", role: "group", "aria-label": "Sequence diagram of messages between the host and agents" });
  const defs = s("defs");
  svg.append(defs);
  lanes.forEach((id, i) => {
    const name = id === groupLane ? "broadcast recipients" : who(id);
    svg.append(s("g", { class: "participant" }, s("rect", { x: cx(i) - 64, y: 4, width: 128, height: 24, rx: 4 }),
      s("text", { x: cx(i), y: 20, "text-anchor": "middle" }, name.length > 18 ? `${name.slice(0, 17)}…` : name)));
    svg.append(s("line", { class: "lifeline", x1: cx(i), x2: cx(i), y1: 28, y2: height }));
  });
  events.forEach((e, row) => {
    const y = top + row * rowH;
    let from, to, cls, label, target, title;
    if (e.run) {
      const r = e.run;
      const sync = r.depth > 0, failed = ["failed", "interrupted", "cancelled"].includes(r.status);
      if (e.type === "refused") {
        from = to = lane(r.agent_id); cls = "refused";
        label = /deadlock|cycle/i.test(e.call.result_preview) ? "✕ cycle refused" : "✕ message failed";
      } else if (e.type === "send") {
        from = lane(r.sender); to = lane(r.agent_id);
        cls = done(r) ? (sync || !r.sender ? "sync" : "async") : "pending";
        label = `${r.sender ? (sync ? "send_and_wait" : "async") : "ask"}${done(r) ? "" : " (pending)"}`;
      } else {
        from = lane(r.agent_id); to = lane(r.reply_to && r.reply_to !== "host" ? r.reply_to : r.sender);
        cls = failed ? "failed" : "reply"; label = failed ? `✕ ${r.status}` : "reply";
      }
      target = () => openRun(r);
      title = e.call ? `${r.agent_name}: ${e.call.name}(${e.call.arguments}) → ${e.call.result_preview}`
        : `${who(r.sender)} → ${r.agent_name}: ${r.input.slice(0, 120)}${r.error ? `\nerror: ${r.error}` : ""}`;
    } else {
      const g = e.group, rs = g.runs, failedN = rs.filter((r) => ["failed", "interrupted", "cancelled"].includes(r.status)).length;
      if (e.type === "fanout") { from = lane(rs[0].sender); to = lanes.indexOf(groupLane); cls = "sync"; label = `broadcast → ${rs.length} agents`; }
      else { from = lanes.indexOf(groupLane); to = lane(rs[0].sender); cls = failedN ? "failed" : "reply"; label = `${rs.filter(done).length}/${rs.length} replies${failedN ? `, ✕ ${failedN} failed` : ""}`; }
      target = () => { expanded.add(g.key); redraw(); };
      title = `${rs.length} recipients: ${rs.map((r) => r.agent_name).join(", ").slice(0, 300)} (click to expand)`;
    }
    const x1 = cx(from), x2 = cx(to), dir = x2 >= x1 ? 1 : -1;
    const self = from === to;
    const g = s("g", { class: "msg", tabindex: 0, role: "link", "data-kind": e.type, "data-run": e.run ? e.run.id : null, "aria-label": `${label}: ${title}`,
      onclick: target, onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); target(); } } }, s("title", {}, title));
    const lineCls = `arrow ${{ reply: "reply", failed: "failed reply", refused: "failed", pending: "pending" }[cls] || ""}`;
    if (self) g.append(s("path", { class: lineCls, d: `M${x1} ${y} h30 v10 h-30` }));
    else g.append(s("line", { class: lineCls, x1, y1: y, x2: x2 - dir * 6, y2: y }));
    const tip = self ? x1 : x2, ty = self ? y + 10 : y;
    const headCls = { async: "head open", reply: "head open", failed: "head failed", refused: "head failed", pending: "head pending" }[cls] || "head";
    const d = self ? 1 : dir;
    g.append(s("path", { class: headCls, d: `M${tip} ${ty} l${-d * 8} -4 l0 8 z` }));
    g.append(s("text", { x: self ? x1 + 36 : (x1 + x2) / 2, y: self ? y + 9 : y - 4, "text-anchor": self ? "start" : "middle" }, label));
    svg.append(g);
  });
  return svg;
}
