// pimingestd status page: plain JavaScript, no build step, no third-party code.
// The API token lives in sessionStorage only; it is sent as a header, never put in a URL.
"use strict";

const PAGE = 50;
const STATE = { view: "list", id: null, offset: 0, timer: null, busy: false, following: null, queue: [], uploading: false };
const ENDED = ["completed", "failed", "cancelled"];
const $ = (sel) => document.querySelector(sel);

function token() { return sessionStorage.getItem("pimingestd.token") || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) { signedOut(token() ? "That token was refused: wrong token." : ""); throw new Error("401"); }
  return resp;
}

async function json(path, options) {
  const resp = await api(path, options);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error ? body.error + (body.detail ? ": " + JSON.stringify(body.detail) : "") : String(resp.status));
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function badge(node, status) { node.textContent = status; node.className = "badge s-" + status; }

function fmt(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function age(iso) { return iso ? duration((Date.now() - Date.parse(iso)) / 1000) : "–"; }

function progress(node, done, total, status) {
  const pct = total ? Math.min(100, (100 * done) / total) : (status === "completed" ? 100 : 0);
  node.firstElementChild.style.width = pct.toFixed(1) + "%";
  node.setAttribute("aria-valuemin", "0");
  node.setAttribute("aria-valuemax", "100");
  node.setAttribute("aria-valuenow", pct.toFixed(1));
  node.classList.toggle("done", status === "completed");
  node.classList.toggle("bad", status === "failed" || status === "cancelled");
  return pct;
}

// ---- sign in ---------------------------------------------------------------------------

function signedOut(message) {
  sessionStorage.removeItem("pimingestd.token");
  stop();
  show("login");
  $("#nav").hidden = true;
  const error = $("#login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("#token").focus();
}

async function signIn(value) {
  sessionStorage.setItem("pimingestd.token", value);
  try {
    await json("/api/overview");
  } catch (e) {
    return; // signedOut already said why
  }
  $("#login-error").hidden = true;
  $("#nav").hidden = false;
  route();
}

// ---- views -----------------------------------------------------------------------------

function show(name) {
  for (const id of ["login", "list", "detail", "upload", "health"]) $("#" + id).hidden = id !== name;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === name || (name === "detail" && a.dataset.view === "list")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function stop() { if (STATE.timer) clearInterval(STATE.timer); STATE.timer = null; }

function poll(fn) {
  stop();
  const tick = async () => {
    if (document.hidden || STATE.busy) return; // a hidden tab asks for nothing
    STATE.busy = true;
    try { await fn(); } catch (e) { /* shown by the view, or a 401 signs out */ } finally { STATE.busy = false; }
  };
  tick();
  STATE.timer = setInterval(tick, 1000);
}

function route() {
  if (!token() && $("#nav").hidden) return; // not signed in yet
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/ingestion\/([0-9a-f]+)$/);
  if (m) { STATE.view = "detail"; STATE.id = m[1]; show("detail"); poll(renderDetail); return; }
  if (hash === "#/upload") {
    STATE.view = "upload"; show("upload");
    restoreFollowed(); // after a reload too
    if (STATE.following.length) poll(follow); else stop(); // back on the view: the dropped files' ingestions, live again
    return;
  }
  if (hash === "#/health") { STATE.view = "health"; show("health"); poll(renderHealth); return; }
  STATE.view = "list"; show("list"); poll(renderList);
}

async function renderList() {
  const status = $("#status-filter").value;
  const q = $("#search").value.trim();
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(STATE.offset) });
  if (status) params.set("status", status);
  if (q) params.set("q", q);
  const body = await json("/api/ingestions?" + params);
  const rows = body.ingestions.map((r) => {
    const bar = el("div", { class: "progress", role: "progressbar", "aria-label": "records done" }, el("div"));
    progress(bar, r.records_acked, r.total_records, r.status);
    const st = el("span");
    badge(st, r.status);
    const link = el("a", { href: "#/ingestion/" + r.ingestion_id, text: r.file_name });
    const records = el("div", { class: "cellbar" }, bar, el("span", { text: fmt(r.records_acked) + " / " + fmt(r.total_records) }));
    return el("tr", { "data-id": r.ingestion_id },
      el("td", { "data-label": "Status" }, st),
      el("td", { class: "file", "data-label": "File" }, link),
      el("td", { "data-label": "Source", text: r.source }),
      el("td", { "data-label": "Records" }, records),
      el("td", { class: "num", "data-label": "Rate", text: r.records_per_second === null ? "–" : fmt(Math.round(r.records_per_second)) + " rec/s" }),
      el("td", { class: "num", "data-label": "ETA", text: duration(r.eta_seconds) }),
      el("td", { class: "num", "data-label": "Rejected", text: fmt(r.records_rejected) }),
      el("td", { class: "num", "data-label": "Age", text: age(r.created_at) }));
  });
  $("#ingestions tbody").replaceChildren(...rows);
  $("#empty").hidden = rows.length > 0;
  const first = body.total ? body.offset + 1 : 0;
  $("#page-info").textContent = first + "–" + (body.offset + rows.length) + " of " + fmt(body.total);
  $("#prev").disabled = body.offset === 0;
  $("#next").disabled = body.offset + rows.length >= body.total;
}

function fact(list, name, value) { list.append(el("dt", { text: name }), el("dd", { text: value })); }

async function renderDetail() {
  const id = STATE.id;
  const [st, tl] = await Promise.all([json("/api/ingestions/" + id), json("/api/ingestions/" + id + "/timeline?cells=120")]);
  $("#detail-title").textContent = st.file_name;
  badge($("#detail-status"), st.status);
  $("#detail-id").textContent = st.ingestion_id;
  progress($("#detail-progress"), st.records_acked, st.total_records, st.status);
  const facts = $("#detail-facts");
  facts.replaceChildren();
  fact(facts, "records", fmt(st.records_acked) + " / " + fmt(st.total_records));
  fact(facts, "chunks", fmt(st.chunks_acked) + " / " + fmt(st.total_chunks));
  fact(facts, "source", st.source + " · " + st.format);
  fact(facts, "rate", st.records_per_second === null ? "–" : fmt(Math.round(st.records_per_second)) + " rec/s");
  fact(facts, "ETA", duration(st.eta_seconds));
  fact(facts, "attempts", String(st.attempts));
  fact(facts, "rejected", fmt(st.records_rejected) + (st.records_invalid ? " (" + fmt(st.records_invalid) + " invalid)" : ""));
  if (st.delta_scope) {
    fact(facts, "unchanged", fmt(st.records_unchanged));
    fact(facts, "deletions", fmt(st.deletions) + " (" + fmt(st.records_deleted) + " deleted)");
  }
  fact(facts, "created", st.created_at);
  fact(facts, "updated", st.updated_at);
  const error = $("#detail-error");
  error.hidden = !st.error;
  error.textContent = st.error || "";
  const cells = tl.cells.map((c) => {
    const n = c.last - c.first + 1;
    const kind = c.rejected || c.records_refused ? "rejected" : c.retried ? "retried" : c.acked === n ? "acked" : c.sent ? "sent" : "spooled";
    const title = (n > 1 ? "chunks " + c.first + "–" + c.last : "chunk " + c.first) + ": " + c.acked + " ACKed"
      + (c.sent ? ", " + c.sent + " sent" : "") + (c.retried ? ", " + c.retried + " retried" : "")
      + (c.rejected ? ", " + c.rejected + " rejected" : "") + (c.records_refused ? ", " + c.records_refused + " records refused" : "");
    return el("span", { class: "c-" + kind, title });
  });
  $("#timeline").replaceChildren(...cells);
  $("#timeline").setAttribute("aria-label", "chunk timeline: " + fmt(tl.chunks) + " chunks");
  const lat = tl.latency_ms;
  $("#latency").textContent = lat ? "ACK latency p50 " + lat.p50 + " ms · p90 " + lat.p90 + " ms · p99 " + lat.p99 + " ms · max " + lat.max + " ms" : "";
  const final = st.status === "completed" || st.status === "cancelled";
  $("#resume").hidden = st.status !== "failed";
  $("#cancel").hidden = final;
  $("#download-rejects").hidden = !(st.records_rejected && (st.status === "completed" || st.status === "cancelled"));
  $("#download-deletions").hidden = !st.deletions;
}

async function act(what) {
  const id = STATE.id;
  const question = what === "cancel" ? "Cancel this ingestion for good? Nothing more of it is sent." : "Resume this ingestion after its last ACKed chunk?";
  if (!window.confirm(question)) return;
  try {
    const st = await json("/api/ingestions/" + id + "/" + what, { method: "POST" });
    // What was done, not the status it left (that one changes: the badge above follows it live).
    $("#detail-message").textContent = what === "cancel" ? "Cancelled." : "Resumed after chunk " + fmt(st.chunks_acked) + ".";
  } catch (e) {
    $("#detail-message").textContent = "Refused: " + e.message;
  }
}

async function download(path, fallback) {
  const resp = await api(path);
  if (!resp.ok) { $("#detail-message").textContent = "Download refused (" + resp.status + ")."; return; }
  const disposition = resp.headers.get("Content-Disposition") || "";
  const named = disposition.match(/filename\*=UTF-8''([^;]+)/);
  const blob = await resp.blob();
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: named ? decodeURIComponent(named[1]) : fallback });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function renderHealth() {
  const o = await json("/api/overview");
  const ready = $("#health-ready");
  badge(ready, o.ready ? "ready" : o.draining ? "draining" : "not ready");
  if (!o.ready && !o.draining) ready.className = "badge s-failed";
  const facts = $("#health-facts");
  facts.replaceChildren();
  fact(facts, "running", String(o.running));
  fact(facts, "chunks in flight", String(o.in_flight) + (o.pimcore.window ? " (window " + o.pimcore.window + ")" : ""));
  if (o.pimcore.paused_seconds > 0) fact(facts, "PIM-Core asked to wait", o.pimcore.paused_seconds.toFixed(1) + " s more");
  fact(facts, "PIM-Core: last ACK", o.pimcore.last_ack_at ? o.pimcore.last_ack_at + " (" + age(o.pimcore.last_ack_at) + " ago)" : "none since the daemon started");
  fact(facts, "PIM-Core: failed attempts, last hour", String(o.pimcore.failures_last_hour));
  if (o.pimcore.last_failure) fact(facts, "PIM-Core: last failure", o.pimcore.last_failure);
  for (const [name, n] of Object.entries(o.folders)) fact(facts, "folder " + name, fmt(n));
  for (const [status, n] of Object.entries(o.by_status)) fact(facts, status, fmt(n));
  for (const [area, what] of Object.entries(o.disk_full)) fact(facts, "disk full: " + area, what.error);
  const records = o.per_minute.records, failures = o.per_minute.failures;
  const top = Math.max(1, ...records, ...failures);
  const points = (xs) => xs.map((v, i) => (i * 600 / (xs.length - 1)).toFixed(1) + "," + (78 - (76 * v) / top).toFixed(1)).join(" ");
  const ns = "http://www.w3.org/2000/svg";
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points(records));
  const fail = document.createElementNS(ns, "polyline");
  fail.setAttribute("points", points(failures));
  fail.setAttribute("class", "fail");
  $("#sparkline").replaceChildren(line, fail);
  const total = records.reduce((a, b) => a + b, 0);
  $("#spark-info").textContent = fmt(total) + " records ACKed in the last hour; peak " + fmt(Math.max(...records)) + " in a minute; dashed: failed attempts.";
}

// ---- upload ------------------------------------------------------------------------------

// Every file of a drop (or of the file picker) is uploaded, one after the other; each one taken is followed
// live below the drop zone, the last one also in the message and its bar. The files followed are kept for
// the session, so a reload (or the daemon restarted under the page) picks them up again.
const FOLLOWED = "pimingestd.following";

function uploadAll(files) {
  if (!STATE.uploading) {
    // A new drop: the files still running stay followed, the ended ones make room.
    STATE.following = (STATE.following || []).filter((f) => !f.ended);
    for (const f of STATE.following) { f.node = null; f.shown = ""; }
    keepFollowed();
    $("#upload-taken").replaceChildren();
    $("#upload-taken").hidden = true;
    $("#upload-ingestion").hidden = true;
  }
  STATE.queue.push(...files); // dropped while others upload: sent after them, none is lost
  if (!STATE.uploading) drain();
}

async function drain() {
  STATE.uploading = true;
  try {
    while (STATE.queue.length) {
      const file = STATE.queue.shift();
      const more = STATE.queue.length ? " (" + STATE.queue.length + " more after it)" : "";
      const body = await upload(file, more);
      if (body === null) continue; // refused or failed: said in its line, the next file goes on
      restoreFollowed();
      const f = { id: body.ingestion_id, name: file.name, shown: "", ended: false };
      STATE.following.push(f);
      keepFollowed();
      taken(f, body);
      if (STATE.view === "upload" && !STATE.timer) poll(follow);
    }
  } finally {
    STATE.uploading = false;
  }
}

function keepFollowed() {
  sessionStorage.setItem(FOLLOWED, JSON.stringify((STATE.following || []).map((f) => ({ id: f.id, name: f.name }))));
}

function restoreFollowed() {
  if (STATE.following !== null) return;
  let kept = [];
  try { kept = JSON.parse(sessionStorage.getItem(FOLLOWED) || "[]"); } catch (e) { /* none */ }
  STATE.following = kept.filter((f) => f && /^[0-9a-f]+$/.test(f.id)).map((f) => ({ id: f.id, name: String(f.name), shown: "", ended: false }));
}

function line(text, ...children) {
  const item = el("li", {}, ...children);
  if (text) item.append(text);
  const list = $("#upload-taken");
  list.append(item);
  list.hidden = list.children.length < 2; // one file: the message above says it all
  return item;
}

// One file's upload; resolves with the daemon's answer, or null (refused, or the daemon unreachable).
function upload(file, of) {
  const params = new URLSearchParams();
  const set = (name, value) => { if (value) params.set(name, value); };
  set("format", $("#opt-format").value);
  set("chunk_records", $("#opt-chunk").value);
  set("key", $("#opt-key").value.trim());
  set("on_invalid", $("#opt-invalid").value);
  set("json_path", $("#opt-json-path").value.trim());
  set("sheet", $("#opt-sheet").value.trim());
  set("delimiter", $("#opt-delimiter").value);
  set("record_path", $("#opt-record-path").value.trim());
  set("deletions", $("#opt-deletions").value);
  if ($("#opt-delta").checked) params.set("delta", "true");
  if ($("#opt-reingest").checked) params.set("re_ingestion", "true");
  const bar = $("#upload-progress");
  const message = $("#upload-message");
  bar.hidden = false;
  progress(bar, 0, 100, "running");
  message.textContent = "Uploading " + file.name + of + "…";
  window.__uploadProgress = [];
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", "/api/files/" + encodeURIComponent(file.name) + (params.toString() ? "?" + params : ""));
    if (token()) xhr.setRequestHeader("Authorization", "Bearer " + token());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      const pct = progress(bar, e.loaded, e.total, "running");
      window.__uploadProgress.push(pct);
    };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 401) { signedOut("That token was refused: wrong token."); resolve(null); return; }
      if (xhr.status >= 300) {
        progress(bar, 0, 100, "failed");
        message.textContent = "Refused (" + xhr.status + "): " + file.name + ": " + (body.error || "") + (body.detail ? ": " + JSON.stringify(body.detail) : "");
        line(message.textContent);
        resolve(null);
        return;
      }
      progress(bar, 100, 100, "completed");
      window.__uploadProgress.push(100);
      resolve(body);
    };
    xhr.onerror = () => {
      progress(bar, 0, 100, "failed");
      message.textContent = "The upload of " + file.name + " failed: the daemon could not be reached.";
      line(message.textContent);
      resolve(null);
    };
    xhr.send(file);
  });
}

// A taken file's ingestion, followed live on the upload view until it ends: status, records, error.
function taken(f, st) {
  const status = el("span");
  badge(status, st.status);
  const counts = st.total_records === undefined ? "" : " " + fmt(st.records_acked) + " / " + fmt(st.total_records) + " records";
  const parts = () => ["Taken: ", el("a", { href: "#/ingestion/" + f.id, text: f.name }), " ", status.cloneNode(true), counts + (st.error ? ": " + st.error : "") + "."];
  const text = parts().map((p) => (typeof p === "string" ? p : p.textContent)).join("");
  f.ended = ENDED.includes(st.status);
  if (text === f.shown && f.node && f.node.isConnected) return; // the live region speaks only when something changed
  f.shown = text;
  if (!f.node || !f.node.isConnected) f.node = line("");
  f.node.replaceChildren(...parts());
  if (STATE.following[STATE.following.length - 1] !== f) return;
  $("#upload-message").replaceChildren(...parts());
  if (st.total_records !== undefined) {
    const bar = $("#upload-ingestion");
    bar.hidden = false;
    progress(bar, st.records_acked, st.total_records, st.status);
  }
}

async function follow() {
  const following = STATE.following;
  if (!following || STATE.view !== "upload") { stop(); return; }
  for (const f of following) {
    if (f.ended && f.node && f.node.isConnected) continue;
    let st;
    try {
      st = await json("/api/ingestions/" + f.id);
    } catch (e) {
      if (!/^unknown ingestion/.test(e.message)) throw e; // the daemon unreachable: the next tick asks again
      f.ended = true; // kept from a session with another state database: say so, and follow the others
      if (!f.node || !f.node.isConnected) f.node = line("");
      f.node.textContent = f.name + ": " + e.message;
      continue;
    }
    if (STATE.following !== following) return; // another drop meanwhile
    taken(f, st);
  }
  if (following.every((f) => f.ended)) stop();
}

// ---- wiring --------------------------------------------------------------------------------

// A token passed once in the URL fragment (#token=...): kept for the session, removed from the address bar.
function fragmentToken() {
  const m = location.hash.match(/^#token=([^&]+)/);
  if (!m) return null;
  history.replaceState(null, "", location.pathname + "#/");
  return decodeURIComponent(m[1]);
}

function init() {
  const given = fragmentToken();
  $("#login-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("#token").value); $("#token").value = ""; });
  $("#signout").addEventListener("click", () => signedOut(""));
  $("#status-filter").addEventListener("change", () => { STATE.offset = 0; renderList(); });
  let typing = null;
  $("#search").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { STATE.offset = 0; renderList(); }, 250); });
  $("#filters").addEventListener("submit", (e) => e.preventDefault());
  $("#prev").addEventListener("click", () => { STATE.offset = Math.max(0, STATE.offset - PAGE); renderList(); });
  $("#next").addEventListener("click", () => { STATE.offset += PAGE; renderList(); });
  $("#resume").addEventListener("click", () => act("resume"));
  $("#cancel").addEventListener("click", () => act("cancel"));
  $("#download-rejects").addEventListener("click", () => download("/api/ingestions/" + STATE.id + "/rejects", "rejects"));
  $("#download-deletions").addEventListener("click", () => download("/api/ingestions/" + STATE.id + "/deletions?limit=10000", "deletions.json"));
  const zone = $("#dropzone"), input = $("#file");
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => { if (input.files.length) uploadAll([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); if (e.dataTransfer.files.length) uploadAll([...e.dataTransfer.files]); });
  window.addEventListener("hashchange", () => { const t = fragmentToken(); if (t !== null) signIn(t); else route(); });
  if (given !== null) { signIn(given); return; }
  // Signed in already this session, or a daemon without a token: try; a 401 shows the form.
  json("/api/overview").then(() => { $("#nav").hidden = false; route(); }).catch(() => {});
}

document.addEventListener("DOMContentLoaded", init);
