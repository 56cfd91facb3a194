// runwarden's web UI: a runs list and a run page, over the read API (/v1/runs, /v1/events,
// /v1/checks). Everything shown comes from agents that may be under attack, so it is only ever
// inserted as text (textContent, createTextNode), never as HTML; the server sends a strict
// Content-Security-Policy as a second line of defence.
"use strict";

const KEY_STORAGE = "runwarden.apiKey";
// Two requests per refresh: 40 a minute, which leaves room under a development key's 60.
const REFRESH_MS = 3000;
let refreshTimer = null;
// Bumped on every navigation, so that a refresh still in flight does not schedule another.
let navigation = 0;

// Characters that change how text around them is shown without showing themselves: bidi
// embeddings, overrides, isolates and marks, zero-width characters, line and paragraph
// separators, tag characters. A tool named "safe_tool\u202Egnp.exe" would read "safe_toolexe.png".
const INVISIBLE = /[\u061C\u200B-\u200F\u2028-\u202E\u2060-\u2064\u2066-\u2069\uFEFF]|\uDB40[\uDC00-\uDC7F]/g;

/** `text` with every invisible formatting character written out as \u{…}. */
function visible(text) {
  return String(text).replace(INVISIBLE, (c) => `\\u{${c.codePointAt(0).toString(16).toUpperCase()}}`);
}

/** Creates an element with text content and attributes (never HTML); all text is `visible`. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined) continue;
    if (name === "text") node.textContent = visible(value);
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(visible(child)) : child);
  }
  return node;
}

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

class NeedsKey extends Error {}

/** GET a read endpoint; throws NeedsKey on 401/403 so the page can ask for a key. */
async function api(path) {
  const headers = { "Accept": "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers["x-api-key"] = key;
  const response = await fetch(path, { headers });
  if (response.status === 401 || response.status === 403) {
    // Why (a restricted key may not read, say), shown beside the key form.
    const refusal = await response.json().catch(() => ({}));
    throw new NeedsKey(refusal.error ? refusal.error.message : "");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

/** Every page of a list, following next_cursor, starting at `offset`. */
async function all(path, offset = 0) {
  const items = [];
  let url = `${path}&limit=100&offset=${offset}`;
  for (;;) {
    const page = await api(url);
    items.push(...page.data);
    if (!page.next_cursor) return items;
    url = `${path}&limit=100&cursor=${encodeURIComponent(page.next_cursor)}`;
  }
}

function showKeyForm(retry) {
  const main = document.getElementById("main");
  main.replaceChildren(document.getElementById("key-form").content.cloneNode(true));
  document.getElementById("key").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, new FormData(event.target).get("key"));
    retry();
  });
}

function time(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").replace("Z", "");
}

/**
 * Pretty-printed JSON when the text is JSON, else the text itself. The text is re-indented as
 * written, never parsed into objects and printed back: a key sent twice (which a check blocks
 * as json.duplicate_key) stays twice, and numbers keep every digit. Content the API returned as
 * JSON rather than as a string was already parsed by the browser, so it is shown as parsed.
 */
function pretty(value) {
  if (typeof value !== "string") return JSON.stringify(value, null, 2);
  try {
    JSON.parse(value);
  } catch (_) {
    return value;
  }
  return reindent(value);
}

/** Indents valid JSON text by two spaces per level, copying strings and numbers verbatim. */
function reindent(text) {
  let out = "";
  let depth = 0;
  const newline = () => "\n" + "  ".repeat(depth);
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      out += text.slice(i, end + 1);
      i = end;
    } else if (c === "{" || c === "[") {
      let next = i + 1;
      while (" \t\r\n".includes(text[next])) next++;
      if (text[next] === (c === "{" ? "}" : "]")) {
        out += c + text[next];
        i = next;
      } else {
        depth++;
        out += c + newline();
      }
    } else if (c === "}" || c === "]") {
      depth--;
      out += newline() + c;
    } else if (c === ",") {
      out += c + newline();
    } else if (c === ":") {
      out += ": ";
    } else if (!" \t\r\n".includes(c)) {
      out += c;
    }
  }
  return out;
}

async function showRuns() {
  const main = document.getElementById("main");
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const agent = params.get("agent_id") || "";
  const filter = el("form", { className: "filter" },
    el("label", {}, "Agent ", el("input", { name: "agent_id", value: agent, placeholder: "any agent" })),
    " ", el("button", { type: "submit", text: "Filter" }));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = new FormData(filter).get("agent_id");
    location.hash = value ? `#/?agent_id=${encodeURIComponent(value)}` : "#/";
  });
  const base = agent ? `/v1/runs?agent_id=${encodeURIComponent(agent)}&limit=100` : "/v1/runs?limit=100";
  const row = (run) => el("tr", {},
    el("td", {}, el("a", { href: `#/runs/${run.trace_id}`, text: run.agent_id })),
    el("td", { text: run.timestamp }),
    el("td", { className: "num", text: String(run.event_count) }),
    el("td", { className: "num", text: String(run.check_count) }),
    el("td", { className: run.blocked_check_count ? "num blocked" : "num", text: String(run.blocked_check_count) }));
  const body = el("tbody");
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ...["Agent", "Started", "Events", "Checks", "Blocked"].map((h) => el("th", { text: h })))),
    body);
  const more = el("button", { type: "button", className: "more", text: "Older runs" });
  let shown = 0;
  // One page of 100 at a time: the newest first, older ones when asked for.
  async function load(cursor) {
    const page = await api(cursor ? `${base}&cursor=${encodeURIComponent(cursor)}` : base);
    body.append(...page.data.map(row));
    shown += page.data.length;
    more.hidden = !page.next_cursor;
    more.onclick = () => load(page.next_cursor).catch((e) => setStatus(e.message));
    setStatus(`${shown} runs${page.next_cursor ? " (older ones: below)" : ""}`);
  }
  await load(null);
  main.replaceChildren(el("h1", { text: "Runs" }), filter,
    shown ? table : el("p", { text: "No runs yet." }), more);
}

function eventItem(event) {
  return el("li", { className: `event ${event.event_type}`, "data-seq": String(event.seq) },
    el("span", { className: "badge", text: event.event_type }),
    el("span", { className: "meta", text: `#${event.seq} · ${time(event.timestamp)}` }),
    el("details", {}, el("summary", { text: "content" }), el("pre", { text: pretty(event.content) })));
}

function checkItem(check) {
  const verdict = check.is_safe ? "safe" : "blocked";
  const findings = el("ul", { className: "findings" }, ...check.findings.map((f) =>
    el("li", { text: `${f.severity} · ${f.rule}: ${f.message}` })));
  return el("li", { className: `check ${verdict}`, "data-seq": String(check.seq) },
    el("span", { className: check.is_safe ? "badge pass" : "badge block", text: check.is_safe ? "PASS" : "BLOCKED" }),
    el("span", { className: "badge", text: check.tool_name }),
    el("span", { className: "meta", text: `#${check.seq} · ${time(check.timestamp)}` }),
    el("p", { className: "reasoning", text: check.reasoning }),
    check.findings.length ? findings : el("span"),
    el("details", { open: check.is_safe ? undefined : "" }, el("summary", { text: "arguments" }), el("pre", { text: pretty(check.content) })));
}

async function showRun(traceId) {
  const main = document.getElementById("main");
  const run = await api(`/v1/runs/${encodeURIComponent(traceId)}`);
  const timeline = el("ol", { className: "timeline", id: "timeline" });
  const counts = el("p", { className: "meta" });
  main.replaceChildren(
    el("h1", { text: run.agent_id }),
    el("p", { className: "meta", text: `trace ${run.trace_id} · project ${run.project} · started ${run.timestamp}` }),
    counts,
    el("h2", { text: "System prompt" }),
    el("div", { className: "prompt", id: "prompt", text: run.system_prompt }),
    el("h2", { text: "Timeline" }),
    timeline);
  let seen = { events: 0, checks: 0, blocked: 0 };
  const items = new Map();
  const show = () => {
    counts.textContent = `${seen.events} events · ${seen.checks} checks · ${seen.blocked} blocked`;
  };
  show();
  // One refresh at a time: each starts after the previous one has finished, so the offsets
  // below always count every item already shown exactly once.
  async function refresh() {
    const q = `trace_id=${encodeURIComponent(traceId)}`;
    const [events, checks] = await Promise.all([
      all(`/v1/events?${q}`, seen.events), all(`/v1/checks?${q}`, seen.checks)]);
    seen = {
      events: seen.events + events.length,
      checks: seen.checks + checks.length,
      blocked: seen.blocked + checks.filter((c) => !c.is_safe).length,
    };
    for (const e of events) items.set(e.seq, eventItem(e));
    for (const c of checks) items.set(c.seq, checkItem(c));
    if (events.length || checks.length) {
      timeline.replaceChildren(...[...items.keys()].sort((a, b) => a - b).map((seq) => items.get(seq)));
    }
    show();
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
  }
  await refresh();
  const mine = navigation;
  const next = () => {
    refreshTimer = setTimeout(() => refresh()
      .catch((e) => setStatus(`refresh failed: ${e.message}`))
      .finally(() => { if (navigation === mine) next(); }), REFRESH_MS);
  };
  next();
}

async function route() {
  navigation += 1;
  clearTimeout(refreshTimer);
  const match = location.hash.match(/^#\/runs\/([0-9a-fA-F-]{36})$/);
  try {
    if (match) await showRun(match[1]);
    else await showRuns();
  } catch (e) {
    if (e instanceof NeedsKey) {
      showKeyForm(route);
      if (e.message) setStatus(e.message);
    }
    else document.getElementById("main").replaceChildren(el("p", { className: "error", text: e.message }));
  }
}

window.addEventListener("hashchange", route);
route();
