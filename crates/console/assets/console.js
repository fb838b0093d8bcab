// The Logbook console: one file, no framework, no build step.
//
// Rules kept throughout:
// - Nothing from the API is ever parsed as HTML: every node is made with createElement and
//   filled with textContent (see `el`). The page's CSP forbids inline script besides.
// - Tokens live in sessionStorage only (this tab), are sent as `Authorization: Bearer`, and
//   never go into a URL. They are asked for on the first 401.
// - Every API error (problem+json) is shown as its title and detail.
"use strict";

(function () {
  const PAGE_SIZE = 50;
  /** Rows the live tail keeps on screen; older rows are dropped. */
  const TAIL_ROWS_MAX = 500;
  /** The tail renders at most this often, whatever the event rate: at 5,000 events/s each
   * refresh puts the newest rows in at once, so the DOM work is bounded (at most
   * TAIL_ROWS_MAX rows per refresh) and the tab stays responsive. */
  const TAIL_REFRESH_MS = 200;
  /** Longest the tail waits between reconnect attempts, in milliseconds. */
  const TAIL_RECONNECT_MAX_MS = 10000;
  /** The health view samples /metrics this often, and keeps a minute of samples. */
  const HEALTH_SAMPLE_MS = 2000;
  const HEALTH_SAMPLES_MAX = 31;
  const TOKEN_KEYS = { events: "logbook.eventsToken", teams: "logbook.adminToken" };

  const view = document.getElementById("view");
  let info = { events: true, teams: false, durability: null };
  /** Called when leaving the current page (closes the tail, stops timers). */
  let leave = null;

  // ---- DOM helpers -------------------------------------------------------------------

  /** An element with attributes (set as attributes, never as HTML) and children (nodes, or
   * strings that become text nodes). */
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Replaces the children of `node` (null and false children are skipped). */
  function fill(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  function show(...children) {
    view.replaceChildren();
    append(view, children);
  }

  function link(hash, text) {
    return el("a", { href: hash }, text);
  }

  function problemBox(error) {
    const box = el("div", { class: "problem", role: "alert" });
    if (error && error.title) {
      append(box, [el("strong", {}, error.title), error.detail ? [": ", error.detail] : []]);
    } else {
      append(box, [el("strong", {}, "Request failed"), ": ", String(error && error.message || error)]);
    }
    return box;
  }

  function table(caption, headers, rows) {
    const head = el("tr", {}, headers.map((h) =>
      el("th", { scope: "col", class: h.num ? "num" : null }, h.label || h)));
    return el("table", {}, el("caption", { class: "muted" }, caption),
      el("thead", {}, head), el("tbody", {}, rows));
  }

  function time(text) {
    if (!text) return "";
    return el("time", { datetime: text }, text.replace("T", " ").replace(/\.\d+Z$/, "Z"));
  }

  function pretty(value) {
    return el("pre", { class: "json" }, JSON.stringify(value, null, 2));
  }

  /** Marks that a page's data is on screen (`performance.mark("console:<page>")`), for
   * scripts/bench-console; the mark is set just before the data is put in the page, in the
   * same task, so the next paint shows it. */
  function ready(page) {
    if (window.performance && performance.mark) performance.mark("console:" + page);
  }

  function origin() {
    return window.location.origin;
  }

  /** A shell-quoted argument: single quotes, with embedded quotes closed and escaped. */
  function shellQuote(text) {
    return "'" + String(text).replace(/'/g, "'\\''") + "'";
  }

  // ---- API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem, retryAfter) {
      super(problem.title || ("HTTP " + status));
      this.status = status;
      this.title = problem.title || ("HTTP " + status);
      this.detail = problem.detail || "";
      this.retryAfter = retryAfter;
      this.problem = problem;
    }
  }

  function token(kind) {
    return sessionStorage.getItem(TOKEN_KEYS[kind]);
  }

  /** Asks for a token once (a form above the page) and keeps it for this tab. Resolves
   * with the token, or null when the person cancels. */
  function askToken(kind) {
    const prompt = document.getElementById("token-prompt");
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    const cancel = document.getElementById("token-cancel");
    document.getElementById("token-why").textContent = kind === "teams"
      ? "The teams API needs the admin token (ADMIN_TOKEN)."
      : "The event store needs a token (EVENTS_TOKEN, or one from EVENTS_TOKENS_FILE).";
    document.getElementById("token-label").textContent =
      kind === "teams" ? "Admin token" : "Events token";
    prompt.hidden = false;
    input.value = "";
    input.focus();
    return new Promise((resolve) => {
      function done(value) {
        form.removeEventListener("submit", submit);
        cancel.removeEventListener("click", stop);
        form.removeEventListener("keydown", onKey);
        prompt.hidden = true;
        input.value = "";
        resolve(value);
      }
      function submit(event) {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        sessionStorage.setItem(TOKEN_KEYS[kind], value);
        done(value);
      }
      function stop() { done(null); }
      function onKey(event) { if (event.key === "Escape") stop(); }
      form.addEventListener("submit", submit);
      cancel.addEventListener("click", stop);
      form.addEventListener("keydown", onKey);
    });
  }

  let pendingAsk = {};
  function askTokenOnce(kind) {
    if (!pendingAsk[kind]) {
      pendingAsk[kind] = askToken(kind).finally(() => { pendingAsk[kind] = null; });
    }
    return pendingAsk[kind];
  }

  /** Calls the API; answers the parsed JSON (or null for 204) and throws ApiError for a
   * problem. On a 401 asks for the token once and retries. */
  async function api(path, options) {
    const opts = Object.assign({ method: "GET", kind: "events", body: undefined }, options || {});
    for (let attempt = 0; attempt < 2; attempt++) {
      const headers = { "Accept": "application/json" };
      const secret = token(opts.kind);
      if (secret) headers["Authorization"] = "Bearer " + secret;
      if (opts.body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(path, {
        method: opts.method, headers, cache: "no-store",
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      });
      if (response.status === 401 && attempt === 0) {
        sessionStorage.removeItem(TOKEN_KEYS[opts.kind]);
        if (await askTokenOnce(opts.kind)) continue;
      }
      if (response.status === 204) return null;
      const type = response.headers.get("content-type") || "";
      const body = type.includes("json") ? await response.json().catch(() => ({})) : {};
      if (!response.ok && response.status !== 207) {
        const retry = response.headers.get("retry-after");
        const fallback = { title: response.status + " " + response.statusText };
        throw new ApiError(response.status, Object.assign(fallback, body), retry === null ? null : Number(retry));
      }
      return body;
    }
    throw new ApiError(401, { title: "Unauthorized", detail: "no token given" }, null);
  }

  // ---- Routing -----------------------------------------------------------------------

  /** `#/section/arg?query` → {section, arg, query}. */
  function parseHash() {
    const hash = window.location.hash.replace(/^#\/?/, "");
    const [path, search] = hash.split("?");
    const slash = path.indexOf("/");
    const section = slash < 0 ? path : path.slice(0, slash);
    const arg = slash < 0 ? "" : decodeURIComponent(path.slice(slash + 1));
    return { section: section || "streams", arg, query: new URLSearchParams(search || "") };
  }

  function route() {
    if (leave) { leave(); leave = null; }
    const { section, arg, query } = parseHash();
    for (const a of document.querySelectorAll("nav a")) {
      const here = a.dataset.section === section ||
        (a.dataset.section === "streams" && (section === "stream" || section === "event")) ||
        (a.dataset.section === "teams" && section === "team");
      if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    const pages = {
      streams: () => streamsPage(query), stream: () => streamPage(arg, query),
      event: () => eventPage(arg), tail: () => tailPage(), health: () => healthPage(),
      teams: () => teamsPage(query), team: () => teamPage(arg),
    };
    const page = pages[section] || (() => show(el("h1", {}, "Not found"),
      el("p", {}, "No such page. ", link("#/streams", "Go to the streams."))));
    Promise.resolve(page()).catch((error) => show(el("h1", {}, "Error"), problemBox(error)));
    view.focus({ preventScroll: true });
  }

  function needsEvents() {
    if (info.events) return false;
    show(el("h1", {}, "No event store here"),
      el("p", {}, "This process serves the teams service only (logbook serve teams)."));
    return true;
  }

  // ---- Streams -----------------------------------------------------------------------

  function firstEventHelp() {
    const command = "curl -X POST " + origin() + "/streams/orders-1/events \\\n" +
      "  -H 'Content-Type: application/json' \\\n" +
      (token("events") ? "  -H \"Authorization: Bearer $EVENTS_TOKEN\" \\\n" : "") +
      "  -d '{\"type\": \"OrderPlaced\", \"data\": {\"total\": 42}}'";
    return el("div", { id: "empty-store" },
      el("p", {}, "The store is empty: no event has been appended yet."),
      el("p", {}, "Append a first event:"), el("pre", {}, command),
      el("p", { class: "muted" }, "Then reload this page."));
  }

  async function streamsPage(query) {
    if (needsEvents()) return;
    const prefix = query.get("prefix") || "";
    const after = query.get("after") || "";
    const search = el("input", { id: "prefix", name: "prefix", type: "search", value: prefix,
      placeholder: "orders-", autocomplete: "off" });
    const form = el("form", { class: "inline", role: "search", onsubmit: (event) => {
      event.preventDefault();
      const value = search.value;
      window.location.hash = "#/streams" + (value ? "?prefix=" + encodeURIComponent(value) : "");
    } }, el("div", {}, el("label", { for: "prefix" }, "Stream name starts with"), search),
    el("button", { type: "submit" }, "Search"));
    const results = el("div", { id: "streams", "aria-live": "polite" }, el("p", { class: "muted" }, "Loading…"));
    show(el("h1", {}, "Streams"), form, results);
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (prefix) params.set("prefix", prefix);
    if (after) params.set("after", after);
    let page;
    try {
      page = await api("/streams?" + params);
    } catch (error) {
      fill(results, problemBox(error));
      return;
    }
    const streams = page.streams || [];
    ready("streams");
    if (streams.length === 0) {
      fill(results, prefix || after
        ? el("p", {}, "No stream " + (prefix ? "starts with “" + prefix + "”" : "after this page") + ".")
        : firstEventHelp());
      return;
    }
    const rows = streams.map((s) => el("tr", {},
      el("td", { class: "mono" }, link("#/stream/" + encodeURIComponent(s.stream), s.stream)),
      el("td", { class: "num" }, String(s.events)),
      el("td", { class: "num" }, String(s.version)),
      el("td", {}, time(s.updated_at))));
    const pager = el("div", { class: "pager" });
    if (after) pager.append(link("#/streams" + (prefix ? "?prefix=" + encodeURIComponent(prefix) : ""), "« First page"));
    if (page.next) {
      const next = new URLSearchParams({ after: page.next });
      if (prefix) next.set("prefix", prefix);
      pager.append(link("#/streams?" + next, "Next page »"));
    }
    fill(results, table("Streams in name order" + (prefix ? ", starting with " + prefix : ""),
      ["Stream", { label: "Events", num: true }, { label: "Last version", num: true }, "Last update"], rows), pager);
  }

  async function streamPage(stream, query) {
    if (needsEvents()) return;
    const from = query.get("from");
    const body = el("div", { id: "events" }, el("p", { class: "muted" }, "Loading…"));
    const summary = el("div", { id: "stream-state" });
    show(el("p", {}, link("#/streams", "« Streams")), el("h1", { class: "mono" }, stream),
      summary, el("p", { class: "muted" }, "Newest first."), body);
    // The stream's state beside its events; the events call reports any error.
    api("/streams/" + encodeURIComponent(stream)).then((state) => {
      fill(summary, el("p", {}, state.events + " events, versions " + state.first_version +
        " to " + state.version + ", last update ", time(state.updated_at), "."),
      state.metadata && Object.keys(state.metadata).length
        ? [el("h2", {}, "Metadata"), pretty(state.metadata)] : null);
    }, () => {});
    const params = new URLSearchParams({ direction: "backward", limit: String(PAGE_SIZE) });
    if (from !== null) params.set("from_version", from);
    let page;
    try {
      page = await api("/streams/" + encodeURIComponent(stream) + "/events?" + params);
    } catch (error) {
      fill(body, problemBox(error));
      return;
    }
    const events = page.events || [];
    ready("stream");
    if (events.length === 0) {
      fill(body, el("p", {}, "This stream has no events to show."));
      return;
    }
    const rows = events.map((e) => el("tr", {},
      el("td", { class: "num" }, String(e.version)),
      el("td", {}, link("#/event/" + encodeURIComponent(e.id), e.type)),
      el("td", { class: "num" }, String(e.position)),
      el("td", {}, time(e.recorded_at)),
      el("td", { class: "mono" }, e.id)));
    const pager = el("div", { class: "pager" });
    if (from !== null) pager.append(link("#/stream/" + encodeURIComponent(stream), "« Newest"));
    if (page.next !== null && page.next !== undefined) {
      pager.append(link("#/stream/" + encodeURIComponent(stream) + "?from=" + page.next, "Older »"));
    }
    fill(body, table("Events of " + stream, [{ label: "Version", num: true }, "Type",
      { label: "Position", num: true }, "Recorded at", "Id"], rows), pager);
  }

  function curlFor(event) {
    const auth = token("events") ? " -H \"Authorization: Bearer $EVENTS_TOKEN\"" : "";
    return "curl -s" + auth + " " + shellQuote(origin() + "/events/" + encodeURIComponent(event.id));
  }

  async function eventPage(id) {
    if (needsEvents()) return;
    show(el("p", {}, link("#/streams", "« Streams")), el("h1", { class: "mono" }, id),
      el("p", { class: "muted" }, "Loading…"));
    let event;
    try {
      event = await api("/events/" + encodeURIComponent(id));
    } catch (error) {
      show(el("p", {}, link("#/streams", "« Streams")), el("h1", { class: "mono" }, id), problemBox(error));
      return;
    }
    const fields = el("dl", { class: "fields" });
    const field = (name, value) => fields.append(el("dt", {}, name), el("dd", {}, value));
    field("Id", el("span", { class: "mono", id: "event-id" }, event.id));
    field("Stream", link("#/stream/" + encodeURIComponent(event.stream), event.stream));
    field("Type", el("span", { id: "event-type" }, event.type));
    field("Version", String(event.version));
    field("Position", String(event.position));
    field("Recorded at", time(event.recorded_at));
    if (event.content_type) field("Content type", event.content_type);
    const data = "data" in event
      ? el("div", { id: "event-data" }, pretty(event.data))
      : el("div", { id: "event-data" }, el("p", { class: "muted" }, "Not JSON; base64:"), el("pre", {}, event.data_base64 || ""));
    let metadata;
    if ("metadata" in event && event.metadata !== null) metadata = pretty(event.metadata);
    else if (event.metadata_base64) metadata = el("pre", {}, event.metadata_base64);
    else metadata = el("p", { class: "muted" }, "No metadata.");
    const curl = curlFor(event);
    const copied = el("span", { class: "muted", role: "status" });
    const copy = el("button", { type: "button", id: "copy-curl", onclick: async () => {
      try {
        await navigator.clipboard.writeText(curl);
        copied.textContent = "Copied.";
      } catch (_) {
        copied.textContent = "Copy failed: select the command above.";
      }
    } }, "Copy as curl");
    show(el("p", {}, link("#/stream/" + encodeURIComponent(event.stream), "« " + event.stream)),
      el("h1", {}, event.type, " ", el("span", { class: "muted" }, "#" + event.version)), fields,
      el("h2", {}, "Data"), data, el("h2", {}, "Metadata"), el("div", { id: "event-metadata" }, metadata),
      el("h2", {}, "Read it with curl"), el("pre", { id: "curl" }, curl), copy, " ", copied);
  }

  // ---- Live tail ---------------------------------------------------------------------

  /** Reads Server-Sent Events from a fetch body (fetch, unlike EventSource, can send the
   * Authorization and Last-Event-ID headers). Calls onMessage({id, event, data}). */
  async function readSse(response, onMessage, signal) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    while (!signal.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // One split per chunk (not one scan per message), so a chunk of hundreds of events
      // costs linear time; the last part is an incomplete message, kept for the next chunk.
      const blocks = buffer.split(/\r?\n\r?\n/);
      buffer = blocks.pop();
      for (const block of blocks) {
        const message = { id: null, event: "message", data: [] };
        for (const line of block.split(/\r?\n/)) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          const field = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "data") message.data.push(field);
          else if (name === "id") message.id = field;
          else if (name === "event") message.event = field;
        }
        if (message.data.length) onMessage(Object.assign(message, { data: message.data.join("\n") }));
      }
    }
  }

  async function headPosition() {
    const page = await api("/events?direction=backward&limit=1");
    const events = page.events || [];
    return events.length ? events[0].position : null;
  }

  async function tailPage() {
    if (needsEvents()) return;
    const state = el("span", { id: "tail-state", role: "status" }, "connecting");
    const rate = el("span", { id: "tail-rate", "aria-live": "off" }, "0 events/s");
    const held = el("span", { id: "tail-held", class: "muted" });
    const pause = el("button", { type: "button", id: "tail-pause", "aria-pressed": "false" }, "Pause");
    const tbody = el("tbody", { id: "tail-rows" });
    const problems = el("div", {});
    show(el("h1", {}, "Live tail of $all"),
      el("div", { class: "tail-bar" }, pause, state, rate, held), problems,
      el("table", { class: "tail" }, el("caption", { class: "muted" }, "Newest first; the last " + TAIL_ROWS_MAX + " events are kept."),
        el("thead", {}, el("tr", {}, ["Position", "Stream", "Version", "Type", "Recorded at"].map((h) =>
          el("th", { scope: "col" }, h)))), tbody));

    const abort = new AbortController();
    let last = null;          // highest position received: never shown twice
    let pending = [];         // received, not rendered yet (newest last), capped
    let paused = false;
    let frame = 0;            // a scheduled refresh (timer, then animation frame)
    let lastRender = 0;
    let arrivals = [];        // arrival times (ms) over the last second, for the rate
    let rendered = 0;

    function schedule() {
      if (frame) return;
      const wait = Math.max(0, lastRender + TAIL_REFRESH_MS - performance.now());
      frame = setTimeout(() => requestAnimationFrame(render), wait);
    }

    function render() {
      frame = 0;
      lastRender = performance.now();
      if (paused || pending.length === 0) return;
      const batch = pending.slice(-TAIL_ROWS_MAX);
      pending = [];
      const fragment = document.createDocumentFragment();
      for (let i = batch.length - 1; i >= 0; i--) {
        const e = batch[i];
        fragment.append(el("tr", {},
          el("td", { class: "num" }, String(e.position)),
          el("td", { class: "mono" }, link("#/stream/" + encodeURIComponent(e.stream), e.stream)),
          el("td", { class: "num" }, String(e.version)),
          el("td", {}, link("#/event/" + encodeURIComponent(e.id), e.type)),
          el("td", {}, time(e.recorded_at))));
      }
      if (batch.length >= TAIL_ROWS_MAX) tbody.replaceChildren(fragment);
      else tbody.prepend(fragment);
      rendered += batch.length;
      while (tbody.rows.length > TAIL_ROWS_MAX) tbody.lastChild.remove();
    }

    function received(message) {
      if (message.event !== "message") {
        throw new Error(message.data);  // `shutdown` or `error`: reconnect
      }
      const event = JSON.parse(message.data);
      if (last !== null && event.position <= last) return;  // already shown before a reconnect
      last = event.position;
      arrivals.push(performance.now());
      pending.push(event);
      if (pending.length > TAIL_ROWS_MAX * 2) pending = pending.slice(-TAIL_ROWS_MAX);
      if (paused) held.textContent = "paused: newest events held";
      else schedule();
    }

    pause.addEventListener("click", () => {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
      pause.setAttribute("aria-pressed", String(paused));
      held.textContent = paused ? "paused" : "";
      if (!paused) schedule();
    });

    const ticker = setInterval(() => {
      const now = performance.now();
      arrivals = arrivals.filter((t) => now - t < 1000);
      rate.textContent = arrivals.length + " events/s";
    }, 500);

    leave = () => {
      abort.abort();
      clearInterval(ticker);
      if (frame) clearTimeout(frame);
    };

    try {
      last = await headPosition();
    } catch (error) {
      fill(problems, problemBox(error));
      state.textContent = "not connected";
      return;
    }
    let delay = 500;
    while (!abort.signal.aborted) {
      try {
        const headers = { "Accept": "text/event-stream" };
        const secret = token("events");
        if (secret) headers["Authorization"] = "Bearer " + secret;
        if (last !== null) headers["Last-Event-ID"] = String(last);
        const response = await fetch("/subscribe", { headers, signal: abort.signal, cache: "no-store" });
        if (response.status === 401) {
          sessionStorage.removeItem(TOKEN_KEYS.events);
          if (!(await askTokenOnce("events"))) { state.textContent = "not connected"; return; }
          continue;
        }
        if (!response.ok) {
          const body = await response.json().catch(() => ({}));
          throw new ApiError(response.status, body, null);
        }
        problems.replaceChildren();
        state.textContent = "live";
        state.className = "good";
        delay = 500;
        await readSse(response, received, abort.signal);
        throw new Error("the subscription ended");
      } catch (error) {
        if (abort.signal.aborted) return;
        state.textContent = "reconnecting";
        state.className = "bad";
        if (error instanceof ApiError) fill(problems, problemBox(error));
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, TAIL_RECONNECT_MAX_MS);
      }
    }
  }

  // ---- Health ------------------------------------------------------------------------

  /** Prometheus text → Map of `name` to the sum of its samples, and `name{labels}` lines. */
  function parseMetrics(text) {
    const sums = new Map();
    const reads = ["read_all", "read_stream", "get_event", "subscribe"];
    let readRequests = 0;
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const space = line.lastIndexOf(" ");
      const key = line.slice(0, space);
      const value = Number(line.slice(space + 1));
      const brace = key.indexOf("{");
      const name = brace < 0 ? key : key.slice(0, brace);
      sums.set(name, (sums.get(name) || 0) + value);
      if (name === "logbook_events_requests_total" && reads.some((r) => key.includes("route=\"" + r + "\""))) {
        readRequests += value;
      }
    }
    sums.set("reads", readRequests);
    return sums;
  }

  function sparkline(values, label) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 100 30");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    const max = Math.max(1, ...values);
    const step = values.length > 1 ? 100 / (HEALTH_SAMPLES_MAX - 2) : 0;
    const offset = 100 - step * (values.length - 1);
    const points = values.map((v, i) => (offset + i * step).toFixed(1) + "," + (29 - (v / max) * 28).toFixed(1));
    if (points.length === 1) points.unshift("0," + points[0].split(",")[1]);
    const base = document.createElementNS(ns, "line");
    base.setAttribute("class", "base");
    for (const [name, value] of [["x1", 0], ["y1", 29.5], ["x2", 100], ["y2", 29.5]]) base.setAttribute(name, value);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(base, line);
    return svg;
  }

  function healthPage() {
    const tiles = el("div", { class: "tiles", id: "health" }, el("p", { class: "muted" }, "Loading…"));
    const problems = el("div", {});
    show(el("h1", {}, "Health"), problems, tiles,
      el("p", { class: "muted" }, "From /metrics, sampled every " + HEALTH_SAMPLE_MS / 1000 + " s; rates over the last minute."));
    const samples = [];
    async function sample() {
      let ready = "unknown";
      try {
        const health = await fetch("/health", { cache: "no-store" });
        ready = health.ok ? "ready" : "starting";
        const response = await fetch("/metrics", { cache: "no-store" });
        if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})), null);
        const metrics = parseMetrics(await response.text());
        samples.push({ at: performance.now(), metrics });
        if (samples.length > HEALTH_SAMPLES_MAX) samples.shift();
        problems.replaceChildren();
      } catch (error) {
        fill(problems, problemBox(error));
        return;
      }
      const latest = samples[samples.length - 1].metrics;
      const rates = (name) => samples.slice(1).map((s, i) =>
        Math.max(0, (s.metrics.get(name) - samples[i].metrics.get(name)) / ((s.at - samples[i].at) / 1000)));
      const appends = rates("logbook_events_appended_total");
      const reads = rates("reads");
      const now = (values) => values.length ? values[values.length - 1].toFixed(1) : "…";
      const tile = (title, value, extra, id) => el("div", { class: "tile", id }, el("div", { class: "muted" }, title),
        el("div", { class: "value" }, value), extra || null);
      const writable = latest.get("logbook_events_writable");
      const children = [tile("Service", ready, null, "health-ready")];
      if (info.events) {
        children.push(
          tile("Log writable", writable === undefined ? "unknown" : writable === 1 ? "yes" : "NO: appends are refused",
            null, "health-writable"),
          tile("Events stored", String(latest.get("logbook_events_stored") ?? "unknown"),
            el("div", { class: "muted" }, String(latest.get("logbook_events_streams") ?? "?") + " streams"), "health-events"),
          tile("Appends/s (events)", now(appends), sparkline(appends, "appends per second, last minute"), "health-appends"),
          tile("Reads/s (requests)", now(reads), sparkline(reads, "reads per second, last minute"), "health-reads"),
          tile("Durability", info.durability || "unknown", null, "health-durability"),
          tile("Live subscribers", String(latest.get("logbook_events_subscribers") ?? 0), null, "health-subscribers"));
      }
      fill(tiles, ...children);
    }
    sample();
    const timer = setInterval(sample, HEALTH_SAMPLE_MS);
    leave = () => clearInterval(timer);
  }

  // ---- Teams -------------------------------------------------------------------------

  function needsTeams() {
    if (info.teams) return false;
    show(el("h1", {}, "No teams service here"),
      el("p", {}, "This process serves the event store only (logbook serve events)."));
    return true;
  }

  async function teamsPage(query) {
    if (needsTeams()) return;
    const cursor = query.get("cursor");
    const list = el("div", { id: "teams" }, el("p", { class: "muted" }, "Loading…"));
    const name = el("input", { id: "team-name", name: "name", required: true, maxlength: 100, autocomplete: "off" });
    const created = el("div", { role: "status" });
    const form = el("form", { class: "inline", id: "create-team", onsubmit: async (event) => {
      event.preventDefault();
      try {
        const team = await api("/teams", { method: "POST", kind: "teams", body: { name: name.value } });
        window.location.hash = "#/team/" + encodeURIComponent(team.id);
      } catch (error) {
        fill(created, problemBox(error));
      }
    } }, el("div", {}, el("label", { for: "team-name" }, "New team name"), name),
    el("button", { type: "submit" }, "Create team"));
    show(el("h1", {}, "Teams"), form, created, list);
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor) params.set("cursor", cursor);
    let page;
    try {
      page = await api("/teams?" + params, { kind: "teams" });
    } catch (error) {
      fill(list, problemBox(error));
      return;
    }
    if (!page.teams.length) {
      fill(list, el("p", {}, "No team yet: create one above."));
      return;
    }
    const rows = page.teams.map((t) => el("tr", {},
      el("td", {}, link("#/team/" + encodeURIComponent(t.id), t.name)),
      el("td", {}, t.description || ""), el("td", {}, time(t.created_at))));
    const pager = el("div", { class: "pager" });
    if (cursor) pager.append(link("#/teams", "« First page"));
    if (page.next_cursor) pager.append(link("#/teams?cursor=" + encodeURIComponent(page.next_cursor), "Next page »"));
    fill(list, table("Teams", ["Name", "Description", "Created"], rows), pager);
  }

  async function teamPage(id) {
    if (needsTeams()) return;
    const base = "/teams/" + encodeURIComponent(id);
    let team;
    try {
      team = await api(base, { kind: "teams" });
    } catch (error) {
      show(el("p", {}, link("#/teams", "« Teams")), el("h1", {}, "Team"), problemBox(error));
      return;
    }
    const members = el("div", { id: "members" }, el("p", { class: "muted" }, "Loading…"));
    const invitations = el("div", { id: "invitations" }, el("p", { class: "muted" }, "Loading…"));
    const emails = el("textarea", { id: "invite-emails", name: "emails", required: true,
      placeholder: "alice@example.com\nbob@example.com" });
    const role = el("select", { id: "invite-role", name: "role" },
      ["member", "admin", "owner"].map((r) => el("option", { value: r }, r)));
    const results = el("div", { id: "invite-results", role: "status" });
    const form = el("form", { class: "inline", id: "invite-form", onsubmit: async (event) => {
      event.preventDefault();
      const list = emails.value.split(/[\s,;]+/).filter(Boolean);
      try {
        const answer = await api(base + "/invitations", { method: "POST", kind: "teams",
          body: { emails: list, role: role.value } });
        fill(results, el("ul", { class: "results" }, answer.results.map((r) =>
          el("li", { class: r.status === "invited" ? "good" : r.status === "invalid_email" ? "bad" : null },
            el("span", { class: "mono" }, r.email), ": ", r.status.replace(/_/g, " "),
            r.error ? " (" + r.error + ")" : ""))));
        emails.value = "";
        loadInvitations();
      } catch (error) {
        fill(results, problemBox(error));
      }
    } }, el("div", {}, el("label", { for: "invite-emails" }, "Emails (one a line, or separated by commas)"), emails),
    el("div", {}, el("label", { for: "invite-role" }, "Role"), role), el("button", { type: "submit" }, "Invite"));

    show(el("p", {}, link("#/teams", "« Teams")), el("h1", {}, team.name),
      team.description ? el("p", {}, team.description) : null,
      el("h2", {}, "Members"), members, el("h2", {}, "Invite"), form, results,
      el("h2", {}, "Invitations"), invitations);

    api(base + "/members?limit=200", { kind: "teams" }).then((page) => {
      fill(members, page.members.length
        ? table("Members", ["Email", "Role", "Joined"], page.members.map((m) => el("tr", {},
          el("td", { class: "mono" }, m.email), el("td", {}, m.role), el("td", {}, time(m.joined_at)))))
        : el("p", {}, "No member yet."),
      page.next_cursor ? el("p", { class: "muted" }, "Only the first 200 are shown.") : null);
    }, (error) => fill(members, problemBox(error)));

    async function act(invitation, action, note) {
      try {
        if (action === "revoke") {
          await api(base + "/invitations/" + encodeURIComponent(invitation.id), { method: "DELETE", kind: "teams" });
          note.textContent = "Revoked.";
        } else {
          await api(base + "/invitations/" + encodeURIComponent(invitation.id) + "/resend", { method: "POST", kind: "teams" });
          note.textContent = "Resent: a new mail is queued.";
        }
        loadInvitations(invitation.id, note.textContent);
      } catch (error) {
        if (error.status === 429) {
          fill(note, problemBox(error), error.retryAfter !== null
            ? el("span", { class: "retry-after" }, "Wait " + error.retryAfter + " s before resending.") : null);
        } else {
          fill(note, problemBox(error));
        }
      }
    }

    function loadInvitations(changedId, changedNote) {
      api(base + "/invitations?limit=200", { kind: "teams" }).then((page) => {
        if (!page.invitations.length) {
          fill(invitations, el("p", {}, "No invitation yet."));
          return;
        }
        const rows = page.invitations.map((inv) => {
          const note = el("div", { class: "muted", role: "status" }, inv.id === changedId ? changedNote : "");
          const pending = inv.status === "pending";
          const delivery = inv.delivery || {};
          return el("tr", { "data-invitation": inv.id, "data-email": inv.email },
            el("td", { class: "mono" }, inv.email), el("td", {}, inv.role),
            el("td", { class: "status" }, inv.status),
            el("td", {}, delivery.status || "", delivery.attempts ? " (" + delivery.attempts + (delivery.attempts === 1 ? " attempt)" : " attempts)") : "",
              delivery.last_error ? el("div", { class: "bad" }, delivery.last_error) : null),
            el("td", {}, time(inv.expires_at)),
            el("td", {}, pending ? [
              el("button", { type: "button", class: "revoke", onclick: () => act(inv, "revoke", note) }, "Revoke"), " ",
              el("button", { type: "button", class: "resend", onclick: () => act(inv, "resend", note) }, "Resend"),
            ] : null, note));
        });
        fill(invitations, table("Invitations", ["Email", "Role", "Status", "Delivery", "Expires", "Actions"], rows),
          page.next_cursor ? el("p", { class: "muted" }, "Only the first 200 are shown.") : null);
      }, (error) => fill(invitations, problemBox(error)));
    }
    loadInvitations();
  }

  // ---- Start -------------------------------------------------------------------------

  async function start() {
    try {
      const response = await fetch("/console/info.json", { cache: "no-store" });
      if (response.ok) info = await response.json();
    } catch (_) { /* keep the defaults: the API calls will say what is wrong */ }
    document.getElementById("nav-teams").hidden = !info.teams;
    if (!info.events) {
      for (const section of ["streams", "tail"]) {
        document.querySelector("nav a[data-section=" + section + "]").hidden = true;
      }
      if (!window.location.hash) window.location.hash = "#/teams";
    }
    window.addEventListener("hashchange", route);
    route();
  }

  start();
})();
