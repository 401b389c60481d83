// The playground: chat through the gateway (streaming), its provenance and errors as they
// are, and the user's own service events, live. Hand-written, no dependencies, no build.
// Every state a request can be in has a visible end: answered, failed, or stopped.

const KEY_SLOT = "sincere.key"; // sessionStorage: this tab only, never a URL or a cookie
const $ = (id) => document.getElementById(id);

// ─── small DOM helpers ────────────────────────────────────────────────────────────────
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function definitions(cls, pairs) {
  const dl = el("dl", { class: cls });
  for (const [term, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    dl.append(el("dt", { text: term }), el("dd", {}, value));
  }
  return dl;
}

const ms = (seconds) => `${(seconds * 1000).toFixed(0)} ms`;
const secs = (milliseconds) => `${(milliseconds / 1000).toFixed(1)} s`;

// ─── the key ──────────────────────────────────────────────────────────────────────────
let apiKey = sessionStorage.getItem(KEY_SLOT);

function authHeaders() {
  return { Authorization: `Bearer ${apiKey}` };
}

function useKey(key) {
  apiKey = key;
  sessionStorage.setItem(KEY_SLOT, key);
  $("key-form").hidden = true;
  $("key-in-use").hidden = false;
  $("key-state").textContent = "A key is in use in this tab.";
  loadModels();
  events.start();
  $("usage-refresh").disabled = false;
  $("usage-state").textContent = "Choose a window and press Show.";
  $("prompt").focus(); // the next thing to do: write
}

function forgetKey() {
  apiKey = null;
  sessionStorage.removeItem(KEY_SLOT);
  events.stop("Not connected: enter a key.");
  $("key-in-use").hidden = true;
  $("key-form").hidden = false;
  $("key").value = "";
  $("model").replaceChildren();
  $("model").disabled = true;
  $("send").disabled = true;
  $("model-state").textContent = "Enter a key to list the models it may use.";
  $("usage-refresh").disabled = true;
  $("usage").replaceChildren();
  $("usage-state").textContent = "Enter a key to see your recorded usage.";
  $("key").focus();
}

// ─── models ───────────────────────────────────────────────────────────────────────────
async function loadModels() {
  const select = $("model");
  const state = $("model-state");
  state.textContent = "Loading the models…";
  let response;
  try {
    response = await fetch("/v1/models", { headers: authHeaders() });
  } catch (err) {
    state.textContent = `The gateway could not be reached (${err.message}); reload to try again.`;
    return;
  }
  const body = await readJson(response);
  if (!response.ok) {
    const error = body?.error ?? {};
    const rid = error.request_id ?? response.headers.get("x-request-id");
    state.textContent = `${response.status}: ${error.message ?? "the models could not be listed"} (request ${rid})`;
    if (response.status === 401) state.textContent += ". Forget the key and enter another.";
    return;
  }
  select.replaceChildren(
    ...body.data.map((m) => {
      const via = [...m.deployments, ...m.fallbacks.map((f) => `then ${f}`)].join(", ");
      return el("option", { value: m.id, text: `${m.id} (${via})` });
    }),
  );
  select.disabled = body.data.length === 0;
  $("send").disabled = body.data.length === 0;
  state.textContent = body.data.length
    ? `${body.data.length} model(s). The first deployment of each is tried first, then its fallbacks.`
    : "This gateway serves no models.";
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

// ─── chat ─────────────────────────────────────────────────────────────────────────────
let history = []; // the conversation sent with each request: only answered turns
let running = null; // { controller, turn } while a request is in flight
let turns = 0;

function newTurn(prompt) {
  turns += 1;
  const list = $("conversation");
  list.append(el("li", {}, el("p", { class: "user", "aria-label": "You said" }, prompt)));
  const turn = {
    root: el("article", { class: "turn", "aria-label": `Answer ${turns}` }),
    state: el("p", { class: "state", role: "status" }),
    text: el("div", { class: "answer" }),
    details: el("div", {}),
    started: performance.now(),
    timer: null,
  };
  turn.root.append(turn.state, turn.text, turn.details);
  list.append(el("li", {}, turn.root));
  turn.root.scrollIntoView({ block: "nearest" });
  return turn;
}

function setState(turn, kind, text) {
  turn.root.classList.remove("waiting", "queued", "streaming", "answered", "failed", "stopped");
  turn.root.classList.add(kind);
  turn.root.dataset.state = kind;
  turn.state.textContent = text;
}

function tick(turn, label) {
  // While nothing else is said, the elapsed time shows the request is alive.
  clearInterval(turn.timer);
  const update = () => setState(turn, turn.root.dataset.state, `${label} (${secs(performance.now() - turn.started)})`);
  update();
  turn.timer = setInterval(update, 250);
}

function finish(turn) {
  clearInterval(turn.timer);
  running = null;
  $("send").disabled = false;
  $("stop").disabled = true;
}

async function send(messages, prompt) {
  const turn = newTurn(prompt);
  const controller = new AbortController();
  running = { controller, turn };
  $("send").disabled = true;
  $("stop").disabled = false;
  setState(turn, "waiting", "");
  tick(turn, "Sent; waiting for the gateway");
  const model = $("model").value;
  let response;
  try {
    response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: JSON.stringify({ model, messages, stream: true, stream_options: { include_usage: true } }),
      signal: controller.signal,
    });
  } catch (err) {
    endUnsent(turn, err, messages, prompt);
    return;
  }
  const rid = response.headers.get("x-request-id");
  if (!response.ok) {
    const body = await readJson(response);
    showError(turn, { status: response.status, error: body?.error, rid, retryAfter: response.headers.get("retry-after"), messages, prompt });
    return;
  }
  try {
    await readStream(response, turn, rid, messages, prompt);
  } catch (err) {
    if (controller.signal.aborted) {
      stopped(turn);
    } else {
      showError(turn, { status: null, error: { message: `The connection broke before the answer was complete: ${err.message}` }, rid, messages, prompt });
    }
  }
}

function endUnsent(turn, err, messages, prompt) {
  if (running?.controller.signal.aborted) {
    stopped(turn);
    return;
  }
  showError(turn, { status: null, error: { message: `The gateway could not be reached: ${err.message}` }, rid: null, messages, prompt });
}

function stopped(turn) {
  finish(turn);
  const partial = turn.text.textContent ? " The text above is partial: all that arrived." : "";
  setState(turn, "stopped", `Stopped by you.${partial}`);
}

async function readStream(response, turn, rid, messages, prompt) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let text = "";
  let provenance = null;
  let usage = null;
  let firstToken = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (line.startsWith(": sincere ")) {
          queueComment(turn, line.slice(": sincere ".length));
          continue;
        }
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") {
          finish(turn);
          history = [...messages, { role: "assistant", content: text }];
          setState(turn, "answered", provenance ? `Answered by ${provenance.deployment} in ${ms(provenance.latency_s)}` : "Answered; no provenance arrived with it");
          turn.details.replaceChildren(provenanceView(provenance, usage, rid));
          return;
        }
        const chunk = JSON.parse(data);
        if (chunk.error) {
          if (text) turn.text.append(el("p", { class: "small", text: "(the text above is partial: the stream failed)" }));
          showError(turn, { status: chunk.error.status ?? null, error: chunk.error, rid, inBand: true, messages, prompt });
          return;
        }
        if (chunk.sincere) provenance = chunk.sincere;
        if (chunk.usage) usage = chunk.usage;
        const piece = chunk.choices?.[0]?.delta?.content;
        if (piece) {
          if (firstToken === null) {
            firstToken = performance.now();
            setState(turn, "streaming", "");
            tick(turn, "Streaming");
          }
          text += piece;
          turn.text.textContent = text;
        }
      }
    }
  }
  // Neither [DONE] nor an error: the answer is not known to be complete.
  const partial = text ? "; the text above is partial" : "";
  showError(turn, { status: null, error: { message: `The stream ended before the answer was complete (no [DONE])${partial}.` }, rid, messages, prompt });
}

function queueComment(turn, line) {
  // ": sincere queued position=2 ahead=1 … estimated_wait_ms_p50=…" or "dequeued waited_ms=…"
  const [kind, ...pairs] = line.split(" ");
  const f = Object.fromEntries(pairs.map((p) => p.split("=", 2)));
  if (kind === "dequeued") {
    setState(turn, "waiting", "");
    tick(turn, `Let through to ${f.deployment} after ${secs(Number(f.waited_ms))} in its queue; waiting for the first token`);
    return;
  }
  const estimate = f.estimate_known === "true"
    ? `estimated wait ${secs(Number(f.estimated_wait_ms_p50))} (90% within ${secs(Number(f.estimated_wait_ms_p90))}, from ${f.estimate_samples} measured answers)`
    : `the gateway has no wait estimate to give yet (${f.estimate_samples} measured answers)`;
  setState(turn, "queued", "");
  tick(turn, `Queued for ${f.deployment}: position ${f.position} (${f.ahead} ahead, ${f.serving} of ${f.capacity} slots busy); ${estimate}`);
}

function attemptsView(attempts) {
  const list = el("ol", { class: "attempts" });
  for (const a of attempts ?? []) {
    const good = a.outcome === "ok";
    const status = a.status_code ? ` HTTP ${a.status_code}` : "";
    const detail = a.detail ? `: ${a.detail}` : "";
    list.append(
      el("li", {},
        `${a.deployment} (${a.model}): `,
        el("span", { class: good ? "outcome-ok" : "outcome-bad", text: a.outcome }),
        `${status} after ${ms(a.duration_s)}${detail}`),
    );
  }
  return list;
}

function provenanceView(p, usage, rid) {
  if (!p) return el("p", { class: "small", text: "No provenance arrived with this answer." });
  const tokens = p.usage ?? usage;
  return definitions("provenance", [
    ["Deployment", p.deployment],
    ["Model", p.model === p.requested_model ? p.model : `${p.model} (asked for ${p.requested_model})`],
    ["Provider", `${p.provider}: ${p.upstream_model}`],
    ["Attempts", attemptsView(p.attempts)],
    ["Tokens", tokens ? `${tokens.prompt_tokens} in, ${tokens.completion_tokens} out` : "not reported by the provider"],
    ["Cost", p.cost_usd !== undefined ? `$${p.cost_usd.toFixed(6)}` : "unknown (no price configured or no token counts)"],
    ["Latency", ms(p.latency_s)],
    ["First token", p.time_to_first_token_s !== undefined ? ms(p.time_to_first_token_s) : "not measured"],
    ["Queue wait", `${p.queue_wait_ms} ms`],
    ["Finish", p.truncated ? `${p.finish_reason} (truncated)` : p.finish_reason],
    ["Request id", rid],
  ]);
}

function showError(turn, { status, error, rid, retryAfter, inBand, messages, prompt }) {
  finish(turn);
  const e = error ?? { message: "the gateway's error body could not be read" };
  const requestId = e.request_id ?? rid;
  const where = status ? `${status}` : inBand ? "failed during the stream" : "failed";
  setState(turn, "failed", `Failed: ${where}${e.code ? ` (${e.code})` : ""}`);
  const seconds = retryAfter !== undefined && retryAfter !== null ? Number(retryAfter) : e.retry_after;
  const countdown = el("span", { class: "retry-countdown" });
  const retry = el("button", { type: "button", class: "retry" }, "Send again");
  retry.addEventListener("click", () => {
    if (!running) send(messages, prompt);
  });
  const block = el("div", { class: "error" },
    el("p", { class: "error-message", text: e.message }),
    definitions("error-detail", [
      ["Request id", requestId],
      ["Type", e.type],
      ["Attempts", e.attempts?.length ? attemptsView(e.attempts) : null],
      ["Retry", Number.isFinite(seconds) ? countdown : null],
      ["Ticket", e.ticket_id ? `${e.ticket_id}${e.incident_id ? ` in incident ${e.incident_id} (${e.incident_state})` : ""}` : null],
      ["Contact", e.contact],
      ["Status", e.status_url ? el("a", { href: e.status_url }, e.status_url) : null],
      ["Suggestions", e.suggestions?.length ? e.suggestions.join(" · ") : null],
      ["Queue", e.queue_position ? `position ${e.queue_position} after ${secs(e.queue_waited_ms)}` : null],
    ]),
    el("div", { class: "row" }, retry),
  );
  turn.details.replaceChildren(block);
  if (Number.isFinite(seconds)) countDown(countdown, retry, seconds);
}

function countDown(node, button, seconds) {
  // The gateway's Retry-After, counted down; the button waits for it.
  let left = Math.ceil(seconds);
  button.disabled = left > 0;
  const show = () => {
    node.textContent = left > 0 ? `the gateway asks to wait: retry in ${left} s` : "you may retry now";
  };
  show();
  const timer = setInterval(() => {
    left -= 1;
    show();
    if (left <= 0) {
      clearInterval(timer);
      button.disabled = false;
    }
  }, 1000);
}

// ─── usage ────────────────────────────────────────────────────────────────────────────
async function loadUsage() {
  // The gateway's own figures from its recorded telemetry, with what they rest on: source,
  // freshness and sample sizes. Figures it does not know are shown as unknown.
  const state = $("usage-state");
  const query = new URLSearchParams({ window: $("usage-window").value, group_by: $("usage-group").value });
  state.textContent = "Asking the gateway…";
  let response;
  try {
    response = await fetch(`/v1/usage?${query}`, { headers: authHeaders() });
  } catch (err) {
    state.textContent = `The gateway could not be reached (${err.message}).`;
    return;
  }
  const body = await readJson(response);
  if (!response.ok) {
    const error = body?.error ?? {};
    const rid = error.request_id ?? response.headers.get("x-request-id");
    const ticket = error.ticket_id ? ` Ticket ${error.ticket_id}.` : "";
    state.textContent = `${response.status}: ${error.message ?? "usage could not be read"} (request ${rid}).${ticket}`;
    $("usage").replaceChildren();
    return;
  }
  const f = body.freshness;
  const age = f.age_s === null ? "nothing recorded yet" : `newest record ${f.age_s.toFixed(0)} s old (${f.verdict})`;
  state.textContent = `As of ${new Date(body.as_of).toLocaleTimeString()} from ${body.source}${body.degraded ? " (degraded)" : ""}: ${body.scope}; ${age}.`;
  const head = ["", "requests", "answered", "failed", "latency p50", "cost"];
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))));
  const rows = el("tbody");
  for (const g of body.groups) {
    const failed = Object.values(g.failed).reduce((a, b) => a + b, 0);
    const few = g.reliability.below_min_samples;
    rows.append(el("tr", few ? { class: "few", title: `fewer than ${body.reliability.min_samples} requests: too few to rely on` } : {},
      el("th", { scope: "row", text: g.key }),
      el("td", { text: String(g.requests) }),
      el("td", { text: String(g.answered) }),
      el("td", { text: String(failed) }),
      el("td", { text: g.latency_s.p50 === null ? "unknown" : ms(g.latency_s.p50) }),
      el("td", { text: g.cost_usd === null ? "unknown" : `$${g.cost_usd.toFixed(6)}` })));
  }
  table.append(rows);
  const notes = body.notes.map((n) => el("p", { class: "small", text: n }));
  $("usage").replaceChildren(...(body.groups.length ? [table] : [el("p", { class: "small", text: "No requests in this window." })]), ...notes);
}

// ─── the events panel ─────────────────────────────────────────────────────────────────
class EventsPanel {
  constructor() {
    this.socket = null;
    this.lastId = null; // the last event shown: a reconnection resumes after it
    this.retries = 0;
    this.timer = null;
    this.watchdog = null;
    this.heartbeatMs = 15000;
    this.readies = 0; // sockets that got ready: after the first, each one is a resumption
    this.wanted = false;
    this.serverGap = false;
  }

  start() {
    this.wanted = true;
    this.connect();
  }

  stop(text) {
    this.wanted = false;
    clearTimeout(this.timer);
    clearTimeout(this.watchdog);
    if (this.socket) this.socket.close(1000, "the key was forgotten");
    this.socket = null;
    this.say(text);
  }

  say(text) {
    $("events-state").textContent = text;
  }

  connect() {
    clearTimeout(this.timer);
    if (!this.wanted || !apiKey) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const resume = this.lastId !== null ? `?last_event_id=${this.lastId}` : "";
    const socket = new WebSocket(`${scheme}//${location.host}/v1/events${resume}`);
    this.socket = socket;
    this.say(this.retries ? `Reconnecting (attempt ${this.retries})…` : "Connecting…");
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "auth", key: apiKey })));
    socket.addEventListener("message", (m) => this.receive(socket, JSON.parse(m.data)));
    socket.addEventListener("close", (c) => this.closed(socket, c.code, c.reason));
    this.alive(); // a handshake that never answers is a dead link too
  }

  receive(socket, message) {
    if (socket !== this.socket) return;
    this.alive();
    if (message.type === "ready") {
      if (message.heartbeat_s) this.heartbeatMs = message.heartbeat_s * 1000;
      if (this.lastId === null) this.lastId = message.last_event_id ?? 0;
      this.readies += 1;
      const again = this.readies > 1;
      this.retries = 0;
      this.say(again ? `Live again: reconnected, resumed after event ${this.lastId}.` : "Live.");
      this.alive();
    } else if (message.type === "gap") {
      this.serverGap = true; // the next id may jump: the gateway has said why
      this.gap(`Events after ${message.after_id} could not all be replayed: ${message.reason}. The oldest still kept is ${message.oldest_available_id ?? "none"}.`);
    } else if (message.type === "event") {
      this.show(message.event);
    }
  }

  show(event) {
    if (this.lastId !== null && event.id <= this.lastId) return; // already shown
    if (!this.serverGap && this.lastId !== null && event.id > this.lastId + 1 && this.lastId > 0) {
      this.gap(`Events ${this.lastId + 1} to ${event.id - 1} never arrived.`);
    }
    this.serverGap = false;
    this.lastId = event.id;
    const at = new Date(event.timestamp).toLocaleTimeString();
    const item = el("li", { class: `ev-${event.type}`, "data-event-id": String(event.id) },
      el("time", { datetime: event.timestamp, text: at }), " ",
      el("span", { class: "type", text: event.type.replaceAll("_", " ") }),
      event.service ? ` · ${event.service}` : "",
      `: ${event.message}`);
    this.append(item);
  }

  gap(text) {
    this.append(el("li", { class: "gap", role: "alert", text }));
  }

  append(item) {
    const list = $("events");
    list.append(item);
    while (list.children.length > 300) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  alive() {
    // Nothing heard for 2.5 heartbeats: the link is dead even if the browser has not
    // noticed (a silent network drop closes nothing), so give it up and resume.
    clearTimeout(this.watchdog);
    const silent = this.heartbeatMs * 2.5;
    this.watchdog = setTimeout(() => this.abandon(4000, `nothing heard for ${secs(silent)}`), silent);
  }

  abandon(code, reason) {
    // Leave the socket without waiting for its close handshake, which a dead link never ends.
    const socket = this.socket;
    if (!socket) return;
    socket.close(code, reason);
    this.closed(socket, code, reason);
  }

  offline() {
    clearTimeout(this.timer);
    this.abandon(4001, "the browser went offline");
    if (this.wanted) this.say(`Offline: the browser has no network. Will resume after event ${this.lastId} once it is back.`);
  }

  closed(socket, code, reason) {
    if (socket !== this.socket) return;
    clearTimeout(this.watchdog);
    this.socket = null;
    if (!this.wanted) return;
    if (code === 4401) {
      this.say(`The key was refused: ${reason}`);
      return;
    }
    if (code === 4400) {
      this.say(`The gateway refused the request: ${reason}`);
      return;
    }
    if (!navigator.onLine) return; // "online" reconnects
    this.retries += 1;
    const wait = Math.min(10, 0.5 * 2 ** (this.retries - 1));
    const why = reason ? `: ${reason}` : "";
    this.say(`Disconnected (${code}${why}); reconnecting in ${wait.toFixed(1)} s and resuming after event ${this.lastId}.`);
    this.timer = setTimeout(() => this.connect(), wait * 1000);
  }
}

const events = new EventsPanel();
window.addEventListener("offline", () => events.offline());
window.addEventListener("online", () => {
  if (events.wanted && !events.socket) events.connect();
});

// ─── wiring ───────────────────────────────────────────────────────────────────────────
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const key = $("key").value.trim();
  if (key) useKey(key);
});
$("forget").addEventListener("click", forgetKey);
$("usage-form").addEventListener("submit", (e) => {
  e.preventDefault();
  loadUsage();
});
$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || running || $("send").disabled) return;
  $("prompt").value = "";
  send([...history, { role: "user", content: prompt }], prompt);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    $("chat-form").requestSubmit();
  }
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && running) running.controller.abort();
});
$("stop").addEventListener("click", () => running?.controller.abort());
$("new-chat").addEventListener("click", () => {
  if (running) running.controller.abort();
  history = [];
  $("conversation").replaceChildren();
  $("prompt").focus();
});

if (apiKey) useKey(apiKey);
