// The operator's page: polls GET /api/v1/ops/cluster with the ops token (kept in this tab's
// sessionStorage only) every two seconds and draws what it says.
const TOKEN = "messenger.opsToken";
const EVERY_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
let timer = null;
let lastOk = 0;

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) if (value !== null && value !== undefined) el.setAttribute(key, value);
  for (const child of children.flat()) if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
  return el;
}

function svg(tag, attrs = {}, text = null) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (text !== null) el.textContent = text;
  return el;
}

function askForToken(message = "") {
  clearTimeout(timer);
  $("cluster-view").hidden = true;
  $("token-view").hidden = false;
  $("ops-token-error").textContent = message;
  $("ops-token").setAttribute("aria-invalid", message ? "true" : "false");
  $("ops-token").focus();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("ops-token").value.trim();
  if (!token) return askForToken("Enter the ops token.");
  sessionStorage.setItem(TOKEN, token);
  $("ops-token").value = "";
  poll();
});

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN);
  askForToken();
});

async function poll() {
  clearTimeout(timer);
  const token = sessionStorage.getItem(TOKEN);
  if (!token) return askForToken();
  let response;
  try {
    response = await fetch("/api/v1/ops/cluster", { headers: { authorization: `Bearer ${token}`, accept: "application/json" } });
  } catch {
    stale("Can't reach the API server");
    timer = setTimeout(poll, EVERY_MS);
    return;
  }
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(TOKEN);
    let message = "The ops token was refused.";
    try { message = (await response.json()).error.message; } catch { /* keep the default */ }
    return askForToken(message.charAt(0).toUpperCase() + message.slice(1));
  }
  if (!response.ok) {
    stale(`The API answered ${response.status}`);
  } else {
    render(await response.json());
    lastOk = Date.now();
  }
  timer = setTimeout(poll, EVERY_MS);
}

function stale(reason) {
  const live = $("live");
  live.classList.add("stale");
  const age = lastOk ? ` · last update ${Math.round((Date.now() - lastOk) / 1000)} s ago` : "";
  live.textContent = `${reason}${age}`;
}

const pill = (ok, up = "up", down = "down") => h("span", { class: `pill ${ok ? "up" : "down"}` }, ok ? up : down);
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)} %`);

function lag(shard) {
  if (shard.replication_lag_seconds === null) return "unknown";
  const seconds = shard.replication_lag_seconds;
  const bytes = shard.replication_lag_bytes;
  return `${seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`} · ${num(bytes)} bytes`;
}

function server(label, status) {
  const state = status.listening && status.serving ? pill(true)
    : status.listening ? h("span", { class: "pill warn" }, "not serving") : pill(false);
  return h("tr", {},
    h("th", { scope: "row" }, label), h("td", {}, state),
    h("td", {}, num(status.client_connections)),
    h("td", {}, `${status.pool.in_use}/${status.pool.in_use + status.pool.idle}${status.pool.waiting ? ` (+${status.pool.waiting} waiting)` : ""}`));
}

function shardCard(shard) {
  const healthy = shard.primary.listening && shard.primary.serving && shard.replica.listening
    && shard.replica.serving && shard.pgbouncer.listening;
  return h("section", { class: "card shard", "data-shard": shard.shard, "aria-label": shard.shard },
    h("h2", {}, shard.shard, pill(healthy, "healthy", "degraded")),
    h("table", { class: "servers" },
      h("thead", {}, h("tr", {}, h("th", {}, "server"), h("th", {}, "state"), h("th", {}, "backends"), h("th", {}, "this worker's pool"))),
      h("tbody", {},
        server("primary", shard.primary),
        server("replica", shard.replica),
        h("tr", {}, h("th", { scope: "row" }, "PgBouncer"), h("td", {}, pill(shard.pgbouncer.listening)),
          h("td", { colspan: "2" }, `port ${shard.pgbouncer.port}`)))),
    h("dl", { class: "kv" },
      h("dt", {}, "replication lag"), h("dd", {}, lag(shard)),
      h("dt", {}, "users"), h("dd", {}, `${num(shard.users)} (${pct(shard.share)} · ring ${pct(shard.ring_share)})`),
      h("dt", {}, "relay"), h("dd", {}, shard.relay ? `${num(shard.relay.pending)} pending · ${num(shard.relay.dead_letters)} dead` : "unknown")));
}

function chart(shards) {
  const width = 720;
  const rowH = 34;
  const left = 90;
  const height = shards.length * rowH + 28;
  const largest = Math.max(0.05, ...shards.map((s) => Math.max(s.share || 0, s.ring_share)));
  const top = Math.min(1, Math.ceil(largest * 1.15 * 20) / 20); // a round axis end
  const x = (v) => left + (v / top) * (width - left - 70);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "Share of users per shard against the ring's share" });
  shards.forEach((s, i) => {
    const y = i * rowH + 6;
    root.append(svg("text", { x: 0, y: y + 17 }, s.shard));
    root.append(svg("rect", { class: "bar-ring", x: left, y: y + 16, width: Math.max(1, x(s.ring_share) - left), height: 9, rx: 3 }));
    root.append(svg("rect", { class: "bar-stored", x: left, y: y + 3, width: Math.max(1, x(s.share || 0) - left), height: 12, rx: 3 }));
    root.append(svg("text", { x: x(Math.max(s.share || 0, s.ring_share)) + 6, y: y + 17 }, `${pct(s.share)} / ${pct(s.ring_share)}`));
  });
  root.append(svg("line", { class: "axis", x1: left, x2: left, y1: 0, y2: height - 20 }));
  root.append(svg("text", { x: left, y: height - 4 }, "0 %"));
  root.append(svg("text", { x: x(top) - 34, y: height - 4 }, `${Math.round(top * 100)} %`));
  return root;
}

function render(snapshot) {
  $("token-view").hidden = true;
  $("cluster-view").hidden = false;
  const live = $("live");
  live.classList.remove("stale");
  live.textContent = `live · updated ${new Date(snapshot.taken_at * 1000).toLocaleTimeString()}`;
  const down = snapshot.shards.filter((s) => !(s.primary.serving && s.replica.serving && s.pgbouncer.listening)).length;
  $("summary").textContent = `${snapshot.shards.length} shards · epoch ${snapshot.epoch} · ${num(snapshot.total_users)} users`
    + (down ? ` · ${down} degraded` : " · all servers up");
  $("shards").replaceChildren(...snapshot.shards.map(shardCard));
  $("chart").replaceChildren(chart(snapshot.shards));
  $("relay").tBodies[0].replaceChildren(...snapshot.shards.map((s) => h("tr", { "data-shard": s.shard },
    h("td", {}, s.shard),
    h("td", {}, s.relay ? num(s.relay.pending) : "–"),
    h("td", {}, s.relay && s.relay.pending ? `${s.relay.oldest_age_s.toFixed(1)} s` : "–"),
    h("td", {}, s.relay ? (s.relay.dead_letters ? h("span", { class: "pill down" }, num(s.relay.dead_letters)) : "0") : "–"))));
  $("resharding").replaceChildren(...reshardingView(snapshot.resharding));
}

const PHASE_WORDS = {
  copy: (f) => `${num(f.tables || 0)} tables streaming, ${num(f.rows || 0)} rows copied`,
  verify: (f) => `${num(f.rows || 0)} rows verified, no difference`,
  switch: (f) => f.resumed_after_publish ? "resumed after the topology went out"
    : `writes to the moving ranges held ${Math.round((f.frozen_s || 0) * 1000)} ms`,
  cleanup: (f) => `${num(Object.values(f.deleted || {}).reduce((a, b) => a + b, 0))} moved rows deleted`,
};

function reshardingView(flow) {
  if (!flow) return [h("p", {}, "No resharding workflow has run.")];
  const running = !["done", "rolled_back"].includes(flow.phase);
  const head = h("p", {},
    `${flow.id}: ${flow.kind} ${flow.shards.from.join(", ")} → ${flow.shards.to.join(", ")}, `
    + `epoch ${flow.epoch.from} → ${flow.epoch.to}, ${(flow.moved_fraction * 100).toFixed(2)} % of the key space · `,
    h("span", { class: `pill ${running ? "warn" : "up"}`, "data-phase": flow.phase }, flow.phase));
  const rows = Object.entries(flow.phases || {}).map(([phase, found]) => h("tr", {},
    h("td", {}, phase), h("td", {}, `${(found.seconds || 0).toFixed(1)} s`),
    h("td", {}, PHASE_WORDS[phase] ? PHASE_WORDS[phase](found) : "")));
  const progress = flow.progress && flow.progress.rows ? Object.entries(flow.progress.rows)
    .filter(([, [, total]]) => total > 0)
    .map(([table, [done, total]]) => h("tr", {}, h("td", {}, `copy ${table}`),
      h("td", {}, `${num(done)} / ${num(total)}`),
      h("td", {}, h("progress", { max: total, value: Math.min(done, total) })))) : [];
  const table = h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "phase"), h("th", {}, "time"), h("th", {}, "found"))),
    h("tbody", {}, ...rows, ...progress));
  return [head, table];
}

poll();
