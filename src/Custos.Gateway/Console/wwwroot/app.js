// The Custos console: a single page over the admin API (/admin/v1). The API enforces every permission; the console
// only hides what the signed-in role cannot do. Every value from the API reaches the page as text (el() never parses
// HTML), and the page's Content-Security-Policy allows no inline script.

const TOKEN = "custos.console.token";
const state = { token: sessionStorage.getItem(TOKEN), me: null, charts: [] };

// ---------------------------------------------------------------------------------------------------------------
// DOM and formatting helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// With the zone's name: server text beside these times (an incident pack's facts) is in UTC.
const dateTime = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
const dayMonth = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const hourMinute = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

function time(value) { return value ? dateTime.format(new Date(value)) : "—"; }
function ago(value) {
  if (!value) return "never";
  const seconds = Math.round((Date.now() - new Date(value).getTime()) / 1000);
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}
function money(value, currency = "USD") {
  const amount = Number(value ?? 0);
  const digits = amount !== 0 && Math.abs(amount) < 0.01 ? 6 : 2;
  return `${amount.toFixed(digits)} ${currency}`;
}
function count(value) { return Number(value ?? 0).toLocaleString(); }
function percent(fraction) {
  const value = Number(fraction) * 100;
  return value > 0 && value < 0.01 ? "< 0.01%" : `${value.toFixed(value < 1 && value > 0 ? 2 : 1)}%`;
}
function axis(value) { return Number(value).toLocaleString(undefined, { maximumSignificantDigits: 3 }); }

function badge(text, kind) { return el("span", { class: `badge ${kind ?? ""}` }, text); }
function decisionBadge(decision) {
  return badge(decision, { allow: "ok", pass: "ok", deny: "bad", throttle: "warn", modify: "info", warn: "warn" }[decision]);
}
function statusBadge(status) {
  return badge(status, { active: "ok", approved: "ok", resolved: "ok", pass: "ok", pending: "info", open: "bad", acknowledged: "warn",
    suspended: "warn", warn: "warn", expired: "warn", revoked: "bad", rejected: "bad", fail: "bad" }[status]);
}

// A definition list of [label, value] pairs.
function facts(pairs) { return el("dl", { class: "facts" }, pairs.map(([k, v]) => [el("dt", null, k), el("dd", null, v)])); }

// A status filter that navigates to #/PAGE/STATUS.
function statusFilter(page, statuses, status) {
  const select = el("select", { name: "status", "aria-label": "Status" }, statuses.map(s => el("option", { value: s, selected: s === status }, s)));
  select.addEventListener("change", () => { location.hash = `#/${page}/${select.value}`; });
  return el("label", null, "Status", select);
}

function table(columns, rows, options = {}) {
  if (rows.length === 0) return el("div", { class: "empty" }, options.empty ?? "Nothing to show.");
  return el("div", { class: "table-wrap" },
    el("table", { "data-testid": options.testid },
      el("thead", null, el("tr", null, columns.map(c => el("th", { class: c.num ? "num" : null }, c.title)))),
      el("tbody", null, rows.map(row => {
        const tr = el("tr", { class: options.onclick ? "clickable" : null, dataset: options.key ? { key: options.key(row) } : undefined },
          columns.map(c => el("td", { class: c.num ? "num" : c.actions ? "actions" : null }, c.cell(row))));
        if (options.onclick) tr.addEventListener("click", event => { if (!event.target.closest("button, a")) options.onclick(row, tr); });
        return tr;
      }))));
}

function toast(text, bad = false) {
  const node = el("div", { class: `toast ${bad ? "bad" : ""}` }, text);
  document.getElementById("toasts").append(node);
  setTimeout(() => node.remove(), 6000);
}

function errorBox(error) {
  return el("div", { class: "error", role: "alert" }, error.message,
    error.code || error.requestId ? el("span", { class: "mono" }, [error.code, error.requestId].filter(Boolean).join(" · ")) : null);
}

function can(permission) { return state.me?.permissions.includes(permission) ?? false; }

// ---------------------------------------------------------------------------------------------------------------
// The admin API

class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail ?? body?.title ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
    this.requestId = body?.request_id;
  }
}

async function api(path, options = {}) {
  const response = await fetch(`/admin/v1${path}`, {
    method: options.method ?? "GET",
    headers: { Authorization: `Bearer ${state.token}`, ...(options.body ? { "Content-Type": "application/json" } : {}) },
    body: options.body ? JSON.stringify(options.body) : undefined,
  });
  if (response.status === 401 && state.me) {
    // The key was revoked or the token expired while the tab was open: the sign-in page says so with the API's code
    // and request id, which find the refusal in the ledger (admin.sign_in_denied).
    const body = safeJson(await response.text());
    signOut(new ApiError(401, { ...body, detail: `Your session is no longer valid: ${body?.detail ?? body?.title ?? "HTTP 401"} Sign in again.` }));
    throw new ApiError(401, { detail: "Signed out." });
  }
  const text = await response.text();
  let body = null;
  if (options.raw) {
    if (!response.ok) throw new ApiError(response.status, safeJson(text));
    return { text, type: response.headers.get("content-type") ?? "text/plain", disposition: response.headers.get("content-disposition") };
  }
  body = safeJson(text);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function safeJson(text) { try { return text ? JSON.parse(text) : null; } catch { return { detail: text }; } }

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined && value !== null && value !== "") search.set(key, value);
  const text = search.toString();
  return text ? `?${text}` : "";
}

// Asks for a reason in a dialog, then runs the action; the answer (or the refusal) is a toast.
function confirmAction({ title, text, button = "Confirm", danger = false, field = "reason", run }) {
  const reason = el("textarea", { name: field, required: true, placeholder: "Why? Recorded in the ledger with your id." });
  const failure = el("div");
  const dialog = el("dialog", { "data-testid": "confirm-dialog" },
    el("form", { method: "dialog" },
      el("h2", null, title), el("p", { class: "muted" }, text),
      el("label", null, field === "reason" ? "Reason" : field, reason), failure,
      el("div", { class: "row" },
        el("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
        el("button", { type: "submit", class: danger ? "danger solid" : "primary", value: "ok" }, button))));
  dialog.querySelector("form").addEventListener("submit", async event => {
    event.preventDefault();
    if (!reason.value.trim()) { failure.replaceChildren(errorBox(new Error("Give a reason: every change records why."))); return; }
    try {
      const message = await run(reason.value.trim());
      dialog.close();
      toast(message);
      route();
    } catch (error) {
      failure.replaceChildren(errorBox(error));
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
}

// ---------------------------------------------------------------------------------------------------------------
// Shell, sign-in and routing

const pages = [
  { path: "overview", title: "Overview", show: () => can("read_spend") || can("read_ledger"), render: overviewPage },
  { path: "services", title: "Services and owners", show: () => true, render: servicesPage },
  { path: "consumers", title: "Consumers and credentials", show: () => true, render: consumersPage },
  { path: "access", title: "Entitlements and access", show: () => true, render: accessPage },
  { path: "alerts", title: "Alerts", show: () => can("read_alerts"), render: alertsPage },
  { path: "ledger", title: "Ledger", show: () => can("read_ledger"), render: ledgerPage },
  { path: "policy", title: "Policy", show: () => can("read_policy"), render: policyPage },
  { path: "reports", title: "Reports", show: () => can("read_reports"), render: reportsPage },
];

// Why the tab was signed out (a message, or the API's refusal with its code and request id), kept in the state rather
// than passed along: the hash change below renders the sign-in page again, and would drop a message passed to it.
function signOut(reason) {
  sessionStorage.removeItem(TOKEN);
  state.token = null;
  state.me = null;
  state.signedOut = reason ?? null;
  location.hash = "#/signin";
  renderSignIn();
}

function renderSignIn() {
  const app = document.getElementById("app");
  app.className = "app signed-out";
  const key = el("input", { type: "password", name: "key", autocomplete: "off", placeholder: "cak_… or an OIDC token", required: true, "aria-label": "Admin key" });
  const reason = state.signedOut;
  const failure = el("div", { "data-testid": "signed-out" },
    reason instanceof Error ? errorBox(reason) : reason ? el("div", { class: "error" }, reason) : null);
  const form = el("form", { class: "panel" },
    el("div", { class: "brand" }, el("img", { src: "favicon.svg", alt: "" }), "Custos"),
    el("h1", null, "Sign in to the console"),
    el("p", { class: "muted" }, "Use your admin key, or a token from your identity provider. It stays in this tab only."),
    el("label", null, "Admin key or token", key), failure,
    el("div", { class: "row" }, el("span", { class: "spacer" }), el("button", { type: "submit", class: "primary" }, "Sign in")));
  form.addEventListener("submit", async event => {
    event.preventDefault();
    state.token = key.value.trim();
    try {
      state.me = await api("/whoami");
      state.signedOut = null;
      sessionStorage.setItem(TOKEN, state.token);
      location.hash = "#/" + (pages.find(p => p.show())?.path ?? "services");
      route();
    } catch (error) {
      state.token = null;
      failure.replaceChildren(errorBox(error));
    }
  });
  app.replaceChildren(el("div", { class: "signin" }, form));
  key.focus();
}

function renderShell(active) {
  const app = document.getElementById("app");
  app.className = "app";
  const me = state.me;
  const scope = [...me.tenants.map(t => `tenant ${t}`), ...me.services.map(s => `service ${s}`)].join(", ") || "all tenants";
  const main = el("main", { class: "main", id: "main" });
  app.replaceChildren(
    el("aside", { class: "sidebar" }, el("div", { class: "sidebar-inner" },
      el("div", { class: "brand" }, el("img", { src: "favicon.svg", alt: "" }), "Custos"),
      el("nav", { class: "nav" }, pages.filter(p => p.show()).map(p =>
        el("a", { href: `#/${p.path}`, class: p.path === active ? "active" : null, "data-nav": p.path }, p.title))),
      el("div", { class: "who", "data-testid": "who" },
        el("strong", null, me.id), `${me.role} · ${scope}`,
        el("button", { type: "button", onclick: () => signOut() }, "Sign out")))),
    main);
  return main;
}

async function route() {
  for (const chart of state.charts) chart.destroy();
  state.charts = [];
  if (!state.token) { renderSignIn(); return; }
  if (!state.me) {
    try { state.me = await api("/whoami"); } catch (error) { signOut(error); return; }
  }
  const [path, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const page = pages.find(p => p.path === path && p.show()) ?? pages.find(p => p.show());
  const main = renderShell(page.path);
  document.title = `${page.title} · Custos console`;
  try {
    await page.render(main, rest); // as in the address: a filter segment is a query string, which URLSearchParams decodes
  } catch (error) {
    main.append(errorBox(error));
  }
  main.dataset.ready = page.path;
}

function head(title, text, ...extra) {
  return el("div", { class: "page-head" }, el("div", null, el("h1", null, title), text ? el("p", null, text) : null), ...extra);
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// ---------------------------------------------------------------------------------------------------------------
// Overview

const palette = ["#2563eb", "#12805c", "#b45309", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#64748b"];

function chart(canvas, config) {
  const instance = new window.Chart(canvas, config);
  state.charts.push(instance);
  return instance;
}

async function overviewPage(main) {
  const windowChoice = sessionStorage.getItem("custos.console.window") ?? "24h";
  const select = el("select", { name: "window", "aria-label": "Window" },
    [["1h", "Last hour"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"]].map(([v, t]) =>
      el("option", { value: v, selected: v === windowChoice }, t)));
  select.addEventListener("change", () => { sessionStorage.setItem("custos.console.window", select.value); route(); });
  main.append(head("Overview", "Spend against budgets, requests and refusals, who uses the most, and what needs attention.", el("label", null, "Window", select)));
  const o = await api(`/overview${query({ window: windowChoice })}`);
  const totals = o.buckets.reduce((t, b) => ({ requests: t.requests + b.requests, refused: t.refused + b.denied + b.throttled }), { requests: 0, refused: 0 });
  // Spend in different currencies is never added together: a card per currency when the view's tenants price in several.
  const spent = Object.fromEntries(o.currencies.map(c => [c, o.buckets.reduce((t, b) => t + Number(b.spend_by_currency[c] ?? 0), 0)]));
  const spendCards = o.currencies.length === 1
    ? [card("Spend", money(spent[o.currencies[0]], o.currencies[0]), "spend")]
    : o.currencies.map(c => card(`Spend in ${c}`, money(spent[c], c), `spend-${c}`));
  main.append(el("div", { class: "cards" },
    card("Requests", count(totals.requests), "requests"),
    card("Refused", count(totals.refused), "refused"),
    ...spendCards,
    card("Open alerts", count(o.open_alerts), "open-alerts")));

  // Spend this month against budgets: cumulative spend per service, and each monthly budget as a dashed line.
  const spendCanvas = el("canvas", { id: "spend-chart", "aria-label": "Spend this month against budgets", role: "img" });
  main.append(el("div", { class: "grid two" },
    el("section", { class: "panel" }, el("h2", null, "Spend this month against budgets"), el("div", { class: "chart-box" }, spendCanvas)),
    el("section", { class: "panel" }, el("h2", null, "Budgets in their current period"),
      table([
        { title: "Budget", cell: b => el("span", null, `${b.scope} `, el("strong", null, b.id)) },
        { title: "Spent", num: true, cell: b => el("span", { "data-testid": `budget-spent-${b.scope}-${b.id}` }, money(b.spent, b.currency)) },
        { title: "of", num: true, cell: b => `${money(b.amount, b.currency)} / ${b.period}` },
        { title: "Used", cell: b => el("div", null, el("div", { class: `bar ${b.fraction >= 1 ? "bad" : b.fraction >= 0.8 ? "warn" : ""}` },
          el("span", { dataset: { width: Math.min(100, b.fraction * 100) } })), el("span", { class: "small muted" }, percent(b.fraction))) },
      ], o.budgets, { testid: "budgets", empty: "No budgets in your scope." }))));
  for (const span of main.querySelectorAll(".bar span")) span.style.width = `${span.dataset.width}%`;
  // The month's days are dates in the zone the API counted the month in, whatever the browser's own.
  const monthDay = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: o.time_zone });
  const labels = o.days.map(d => monthDay.format(new Date(d)));
  const datasets = [];
  o.spend_this_month.forEach((s, i) => {
    const color = palette[i % palette.length];
    const spent = Number(s.cumulative.at(-1) ?? 0);
    // With several currencies on one axis, each line names its own.
    // A service removed from the policy since it spent this month keeps its line, marked as retired.
    const name = (o.currency === null ? `${s.service} (${s.currency})` : s.service) + (s.retired ? " (retired)" : "");
    datasets.push({ label: name, currency: s.currency, data: s.cumulative.map(Number), borderColor: color, backgroundColor: color, tension: 0.2, pointRadius: 2 });
    if (s.monthly_budget !== null) {
      // A budget line far above the spend would flatten it to zero: start it hidden (the legend shows it again).
      datasets.push({ label: `${name} budget (${percent(spent / Number(s.monthly_budget))} used)`, currency: s.currency, data: labels.map(() => Number(s.monthly_budget)),
        borderColor: color, borderDash: [6, 4], pointRadius: 0, borderWidth: 1.5, hidden: spent < Number(s.monthly_budget) * 0.05 });
    }
  });
  chart(spendCanvas, {
    type: "line",
    data: { labels, datasets },
    options: {
      maintainAspectRatio: false, animation: false, interaction: { mode: "index", intersect: false },
      scales: { y: { beginAtZero: true, title: { display: true, text: o.currency ?? o.currencies.join(" / ") }, ticks: { callback: axis } } },
      plugins: { tooltip: { callbacks: { label: c => `${c.dataset.label}: ${money(c.parsed.y, c.dataset.currency)}` } } },
    },
  });

  // Requests and refusals by reason over the window.
  const topReasons = Object.keys(o.reasons).slice(0, 6);
  const bucketLabel = o.bucket_seconds >= 86400 ? d => dayMonth.format(new Date(d)) : o.bucket_seconds >= 21600 ? d => `${dayMonth.format(new Date(d))} ${hourMinute.format(new Date(d))}` : d => hourMinute.format(new Date(d));
  const requestsCanvas = el("canvas", { id: "requests-chart", "aria-label": "Requests and refusals by reason", role: "img" });
  main.append(el("div", { class: "grid halves" },
    el("section", { class: "panel" }, el("h2", null, "Requests and refusals by reason"), el("div", { class: "chart-box" }, requestsCanvas)),
    el("section", { class: "panel" }, el("h2", null, "Top consumers"),
      table([
        // A link to the consumer's entries where the ledger can be read and they can be found by consumer.
        { title: "Consumer", cell: c => can("read_ledger") && c.consumer !== "(unidentified)"
          ? el("a", { href: `#/ledger/consumer=${encodeURIComponent(c.consumer)}` }, c.consumer) : c.consumer },
        { title: "Service", cell: c => c.service ?? "—" },
        { title: "Requests", num: true, cell: c => count(c.requests) },
        { title: "Refused", num: true, cell: c => count(c.refused) },
        { title: "Spend", num: true, cell: c => money(c.spend, c.currency) },
      ], o.top_consumers, { testid: "top-consumers", empty: "No requests in this window." }),
      el("h3", null, "Refusals by reason"),
      table([{ title: "Reason", cell: ([r]) => el("code", null, r) }, { title: "Requests", num: true, cell: ([, n]) => count(n) }],
        Object.entries(o.reasons), { testid: "reasons", empty: "No refusals in this window." }))));
  const other = o.buckets.map(b => Object.entries(b.reasons).filter(([r]) => !topReasons.includes(r)).reduce((t, [, n]) => t + n, 0));
  chart(requestsCanvas, {
    type: "bar",
    data: {
      labels: o.buckets.map(b => bucketLabel(b.start)),
      datasets: [
        { label: "allowed", data: o.buckets.map(b => b.allowed), backgroundColor: "#7fd1ae" },
        ...topReasons.map((r, i) => ({ label: r, data: o.buckets.map(b => b.reasons[r] ?? 0), backgroundColor: palette[(i + 2) % palette.length] })),
        ...(other.some(n => n > 0) ? [{ label: "other refusals", data: other, backgroundColor: "#94a3b8" }] : []),
      ],
    },
    options: { maintainAspectRatio: false, animation: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
  });

  if (can("read_alerts")) {
    const alerts = await api("/alerts?status=open&limit=5");
    main.append(el("section", { class: "panel" }, el("h2", null, "Open alerts"), alertTable(alerts, { compact: true })));
  }
}

function card(label, value, id) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value", "data-testid": `card-${id}` }, value));
}

// ---------------------------------------------------------------------------------------------------------------
// Services and owners

function owner(o) {
  if (!o?.name) return el("span", { class: "badge bad" }, "missing");
  return el("span", null, o.name, el("br"), el("span", { class: "small muted" }, o.email ?? o.webhook ?? ""), o.admin ? el("span", { class: "small muted" }, ` · admin ${o.admin}`) : null);
}

async function servicesPage(main) {
  main.append(head("Services and owners", "Every service with the people accountable for its policy, its bill and its operation. Gaps are missing governance."));
  const services = await api("/services");
  const gaps = services.filter(s => s.governance_gaps.length > 0).length;
  main.append(el("div", { class: "cards" },
    card("Services", count(services.length), "services"),
    card("With governance gaps", count(gaps), "gaps"),
    card("Suspended", count(services.filter(s => s.suspended).length), "suspended"),
    card("With a budget", count(services.filter(s => s.budget).length), "budgeted")));
  main.append(el("section", { class: "panel" }, table([
    { title: "Service", cell: s => el("div", null, el("strong", null, s.id), el("br"), el("span", { class: "small muted" }, `${s.tenant} · ${s.description ?? ""}`)) },
    { title: "Policy owner", cell: s => owner(s.owners.policy) },
    { title: "Billing owner", cell: s => owner(s.owners.billing) },
    { title: "Technical owner", cell: s => owner(s.owners.technical) },
    { title: "Agent operator / sponsor", cell: s => el("div", null, s.owners.agent_operator?.name ?? "—", el("br"), el("span", { class: "small muted" }, s.owners.business_sponsor?.name ?? "")) },
    { title: "Budget", cell: s => s.budget ? `${s.budget.amount} / ${s.budget.period ?? "month"}` : "—" },
    { title: "Models · prompt rules", cell: s => el("div", { "data-testid": "prompt-admin" }, s.models ? s.models.join(", ") : "every model of the tenant", el("br"),
      el("span", { class: "small muted" }, promptRules(s.prompt_rules, s.tenant_prompt_rules))) },
    { title: "Governance", cell: s => s.governance_gaps.length === 0 ? badge("complete", "ok") : el("div", null, s.governance_gaps.map(g => el("span", { class: "gap" }, g))) },
    { title: "Status", cell: s => suspension(s, "service") },
  ], services, { testid: "services", key: s => s.id })));
}

// The prompt admin's part of a service as its rules read: "card-numbers → redact, project-names → deny", then the tenant's.
function promptRules(own, tenant) {
  const text = rules => rules.map(r => `${r.id} → ${r.action ?? "deny"}`).join(", ");
  const parts = [];
  if (own?.length) parts.push(text(own));
  if (tenant?.length) parts.push(`tenant: ${text(tenant)}`);
  return parts.length ? parts.join("; ") : "no prompt rules";
}

// Active, or suspended, naming the kill switch when it is not the item's own (own: "service" or "consumer"): a tenant's
// or a service's refuses every request beneath it.
function suspension(item, own) {
  if (!item.suspended) return badge("active", "ok");
  const by = item.suspended_by && item.suspended_by !== own ? el("span", { class: "small muted" }, ` by the ${item.suspended_by}'s kill switch`) : null;
  return el("span", null, badge("suspended", "bad"), by);
}

// ---------------------------------------------------------------------------------------------------------------
// Consumers and credentials

async function consumersPage(main) {
  main.append(head("Consumers and credentials", "Who calls the models, through which keys, and when each key was last used."));
  const consumers = await api("/consumers");
  main.append(el("section", { class: "panel" }, el("h2", null, "Consumers"), table([
    { title: "Consumer", cell: c => el("strong", null, c.id) },
    { title: "Service", cell: c => `${c.service} · ${c.tenant}` },
    { title: "Category", cell: c => badge(c.category, "info") },
    { title: "Status", cell: c => suspension(c, "consumer") },
    { title: "Models now", cell: c => c.models.join(", ") || "—" },
    { title: "Keys", num: true, cell: c => count(c.credentials) },
  ], consumers, { testid: "consumers", key: c => c.id })));
  if (!can("read_credentials")) return;
  const credentials = await api("/credentials");
  const manage = can("manage_credentials");
  const act = (c, verb, danger) => el("button", {
    type: "button", class: `small ${danger ? "danger" : ""}`, "data-action": verb, "data-credential": c.id,
    onclick: () => confirmAction({
      title: `${verb[0].toUpperCase()}${verb.slice(1)} ${c.id}?`,
      text: verb === "revoke" ? `The key ${c.prefix ?? ""}… of ${c.consumer} stops working on every node at once, for good.`
        : verb === "suspend" ? `The key of ${c.consumer} is refused until someone resumes it.` : `The key of ${c.consumer} works again.`,
      button: verb[0].toUpperCase() + verb.slice(1), danger,
      run: async reason => {
        const result = await api(`/credentials/${encodeURIComponent(c.id)}/${verb}`, { method: "POST", body: { reason } });
        return `${c.id}: ${result.before ?? "?"} → ${result.after ?? verb}, policy version ${result.policy_version}.`;
      },
    }),
  }, verb);
  main.append(el("section", { class: "panel" }, el("h2", null, "Credentials"), table([
    { title: "Credential", cell: c => el("div", null, el("strong", null, c.id), el("br"), el("span", { class: "small muted mono" }, c.prefix ? `${c.prefix}…` : c.kind)) },
    { title: "Consumer", cell: c => `${c.consumer} · ${c.service}` },
    { title: "Status", cell: c => statusBadge(c.status) },
    { title: "Created", cell: c => time(c.created_at) },
    { title: "Last used", cell: c => el("span", { title: time(c.last_used) }, ago(c.last_used)) },
    { title: "Expires", cell: c => c.expires_at ? time(c.expires_at) : "never" },
    ...(manage ? [{
      title: "", actions: true, cell: c => c.status === "revoked" ? null : el("div", { class: "row" },
        c.status === "suspended" ? act(c, "resume") : act(c, "suspend"), act(c, "revoke", true)),
    }] : []),
  ], credentials, { testid: "credentials", key: c => c.id })));
}

// ---------------------------------------------------------------------------------------------------------------
// Access requests

async function accessPage(main, [status = "pending"]) {
  main.append(head("Entitlements and access requests", "Who may call which models, who approved it, and who asked for more. The service's policy owner (or a delegate the policy names) decides.", statusFilter("access", ["pending", "approved", "rejected", "all"], status)));
  const [requests, services, consumers] = await Promise.all([api(`/access-requests${status === "all" ? "" : query({ status })}`), api("/services"), api("/consumers")]);
  const mayDecide = r => {
    const service = services.find(s => s.id === r.service);
    return r.status === "pending" && r.requested_by !== state.me.id && service && (service.owners.policy?.admin === state.me.id || service.approvers.includes(state.me.id));
  };
  const decide = (r, approve) => el("button", {
    type: "button", class: `small ${approve ? "primary" : "danger"}`, "data-action": approve ? "approve" : "reject", "data-request": r.id,
    onclick: () => confirmAction({
      title: `${approve ? "Approve" : "Reject"} ${r.id}?`,
      text: approve ? `${r.consumer} may call ${r.models.join(", ")}${r.valid_until ? ` until ${time(r.valid_until)}` : ""}. This makes a new policy version naming you as approver.`
        : `${r.consumer} keeps the access it has.`,
      button: approve ? "Approve" : "Reject", danger: !approve,
      run: async reason => {
        const result = await api(`/access-requests/${encodeURIComponent(r.id)}/${approve ? "approve" : "reject"}`, { method: "POST", body: { reason } });
        return `${r.id} ${result.status}${result.policy_version ? `, policy version ${result.policy_version}` : ""}.`;
      },
    }),
  }, approve ? "Approve" : "Reject");
  main.append(el("section", { class: "panel" }, table([
    { title: "Request", cell: r => el("strong", null, r.id) },
    { title: "Consumer", cell: r => `${r.consumer} · ${r.service}` },
    { title: "Models", cell: r => r.models.join(", ") },
    { title: "Justification", cell: r => r.justification },
    { title: "Requested", cell: r => el("span", null, r.requested_by, el("br"), el("span", { class: "small muted" }, time(r.requested_at))) },
    { title: "Status", cell: r => statusBadge(r.status) },
    { title: "Decided", cell: r => r.decided_by ? el("span", null, r.decided_by, el("br"), el("span", { class: "small muted" }, `${time(r.decided_at)} · ${r.decision_reason ?? ""}`)) : "—" },
    { title: "", actions: true, cell: r => mayDecide(r) ? el("div", { class: "row" }, decide(r, true), decide(r, false)) : null },
  ], requests, { testid: "access-requests", key: r => r.id, empty: `No ${status === "all" ? "" : status} access requests.` })));
  if (can("request_access")) main.append(requestAccessForm());
  const entitlements = consumers.flatMap(c => c.entitlements.map(e => ({ consumer: c, ...e })));
  main.append(el("section", { class: "panel" }, el("h2", null, "Entitlements in the policy in force"), table([
    { title: "Consumer", cell: e => el("span", null, el("strong", null, e.consumer.id), el("br"), el("span", { class: "small muted" }, `${e.consumer.service} · ${e.consumer.category}`)) },
    { title: "Models", cell: e => e.models.join(", ") },
    { title: "Approved by", cell: e => e.approved_by ?? el("span", { class: "muted" }, e.source === "policy" ? "not recorded" : e.source) },
    { title: "Ticket", cell: e => e.ticket ?? "—" },
    { title: "Valid", cell: e => `${e.valid_from ? time(e.valid_from) : "always"} – ${e.valid_until ? time(e.valid_until) : "no end"}` },
    { title: "Now", cell: e => e.active ? badge("in force", "ok") : badge("not in force", "warn") },
  ], entitlements, { testid: "entitlements", empty: "No consumer has an entitlement of its own; they use their category's models." })));
}

function requestAccessForm() {
  const consumer = el("input", { name: "consumer", required: true, placeholder: "consumer id" });
  const models = el("input", { name: "models", required: true, placeholder: "gpt-4o, claude-sonnet" });
  const justification = el("input", { name: "justification", required: true, placeholder: "ticket or why", size: 40 });
  const failure = el("div");
  const form = el("form", { class: "panel" }, el("h2", null, "Ask for access"),
    el("div", { class: "filters" }, el("label", null, "Consumer", consumer), el("label", null, "Models", models), el("label", null, "Justification", justification),
      el("button", { type: "submit", class: "primary" }, "Request")), failure);
  form.addEventListener("submit", async event => {
    event.preventDefault();
    try {
      const created = await api("/access-requests", { method: "POST", body: { consumer: consumer.value.trim(), models: models.value.split(",").map(m => m.trim()).filter(Boolean), justification: justification.value.trim() } });
      toast(`${created.id} is waiting for the policy owner of ${created.service}.`);
      route();
    } catch (error) {
      failure.replaceChildren(errorBox(error));
    }
  });
  return form;
}

// ---------------------------------------------------------------------------------------------------------------
// Alerts

function alertTable(alerts, { compact = false } = {}) {
  const ack = a => el("button", {
    type: "button", class: "small", "data-action": "acknowledge", "data-alert": a.id,
    onclick: async () => {
      try {
        await api(`/alerts/${encodeURIComponent(a.id)}/ack`, { method: "POST", body: {} });
        toast(`${a.id} acknowledged: escalation stops.`);
        route();
      } catch (error) { toast(error.message, true); }
    },
  }, "Acknowledge");
  const resume = a => el("button", {
    type: "button", class: "small", "data-action": "resume", "data-alert": a.id,
    onclick: () => confirmAction({
      title: `Undo the action of ${a.id}?`, text: `${a.action_taken}. Resuming resolves the alert.`, button: "Resume",
      run: async reason => {
        const result = await api(`/alerts/${encodeURIComponent(a.id)}/resume`, { method: "POST", body: { reason } });
        return `${a.id} resolved${result.policy_version ? `, policy version ${result.policy_version}` : ""}.`;
      },
    }),
  }, "Resume");
  return table([
    { title: "Alert", cell: a => el("div", null, el("strong", null, a.id), " ", badge(a.severity, { critical: "bad", warning: "warn", info: "info" }[a.severity])) },
    { title: "What", cell: a => el("div", null, a.summary, el("br"), el("span", { class: "small muted" }, `${a.type} · ${a.subject}`)) },
    { title: "Raised", cell: a => el("span", null, time(a.raised_at), a.occurrences > 1 ? el("span", { class: "small muted" }, ` · ×${a.occurrences}`) : null) },
    { title: "Status", cell: a => statusBadge(a.status) },
    ...(compact ? [] : [
      { title: "Escalation", cell: a => el("div", { class: "small" }, a.notified_roles.length ? `told: ${a.notified_roles.join(", ")}` : "—", el("br"),
          a.escalated_at ? `escalated ${time(a.escalated_at)}` : a.acknowledged_by ? `acknowledged by ${a.acknowledged_by}` : "") },
      { title: "Action", cell: a => a.action_taken ?? "—" },
      { title: "", actions: true, cell: a => el("div", { class: "row" },
          a.status === "open" && can("acknowledge_alerts") ? ack(a) : null,
          a.status !== "resolved" && a.action_taken && can("manage_credentials") ? resume(a) : null) },
    ]),
  ], alerts, { testid: "alerts", key: a => a.id, empty: "No alerts." });
}

async function alertsPage(main, [status = "open"]) {
  main.append(head("Alerts", "What the detectors raised, who was told, and what was done automatically.", statusFilter("alerts", ["open", "acknowledged", "resolved", "all"], status)));
  const alerts = await api(`/alerts${status === "all" ? "" : query({ status })}`);
  main.append(el("section", { class: "panel" }, alertTable(alerts)));
}

// ---------------------------------------------------------------------------------------------------------------
// Ledger search and entry detail

const ledgerFields = ["tenant", "service", "consumer", "model", "decision", "kind", "from", "to", "limit"];

async function ledgerPage(main, [filter = ""]) {
  const params = Object.fromEntries(new URLSearchParams(filter));
  if (params.request_id) return ledgerEntryPage(main, params.request_id);
  const inputs = {
    tenant: el("input", { name: "tenant", value: params.tenant ?? "" }),
    service: el("input", { name: "service", value: params.service ?? "" }),
    consumer: el("input", { name: "consumer", value: params.consumer ?? "" }),
    model: el("input", { name: "model", value: params.model ?? "" }),
    decision: el("select", { name: "decision" }, ["", "allow", "deny", "throttle"].map(d => el("option", { value: d, selected: d === (params.decision ?? "") }, d || "any"))),
    kind: el("select", { name: "kind" }, ["request", "admin", "shed", "any"].map(k => el("option", { value: k, selected: k === (params.kind ?? "request") }, k))),
    from: el("input", { name: "from", type: "datetime-local", value: params.from ? toLocalInput(params.from) : "" }),
    to: el("input", { name: "to", type: "datetime-local", value: params.to ? toLocalInput(params.to) : "" }),
    limit: el("input", { name: "limit", type: "number", min: 1, max: 10000, value: params.limit ?? 100 }),
  };
  const form = el("form", { class: "panel filters", "data-testid": "ledger-filters" },
    ledgerFields.map(f => el("label", null, f, inputs[f])), el("button", { type: "submit", class: "primary" }, "Search"));
  form.addEventListener("submit", event => {
    event.preventDefault();
    const next = {};
    for (const f of ledgerFields) {
      const value = inputs[f].value.trim();
      if (!value) continue;
      next[f] = f === "from" || f === "to" ? new Date(value).toISOString() : value;
    }
    location.hash = `#/ledger/${new URLSearchParams(next).toString()}`;
  });
  main.append(head("Ledger", "Every decision and every administrative action, hash-chained. Select an entry for every control's verdict."), form);
  const entries = (await api(`/ledger${query(params)}`)).reverse();
  const isRequest = (params.kind ?? "request") === "request";
  const open = e => { if (e.kind === "request" || e.request_id) location.hash = `#/ledger/${new URLSearchParams({ request_id: e.request_id })}`; };
  main.append(el("section", { class: "panel" }, el("div", { class: "row" }, el("h2", null, `${count(entries.length)} entries, newest first`)),
    isRequest ? table([
      { title: "Time", cell: e => time(e.timestamp) },
      { title: "Request", cell: e => el("a", { href: `#/ledger/${new URLSearchParams({ request_id: e.request_id })}`, class: "mono" }, e.request_id) },
      { title: "Consumer", cell: e => e.consumer ? `${e.consumer} · ${e.service}` : el("span", { class: "muted" }, "unidentified") },
      { title: "Model", cell: e => e.model ?? "—" },
      { title: "Decision", cell: e => el("div", null, decisionBadge(e.decision), e.reasons.length ? el("div", { class: "small mono" }, e.reasons.join(", ")) : null) },
      { title: "Status", num: true, cell: e => e.status },
      { title: "Tokens", num: true, cell: e => e.input_tokens === null ? "—" : `${count(e.input_tokens)} / ${count(e.output_tokens)}` },
      { title: "Cost", num: true, cell: e => e.cost === null ? "—" : money(e.cost, e.currency ?? "USD") },
      { title: "Policy", cell: e => el("a", { href: `#/policy/${e.policy_version}` }, `v${e.policy_version}`) },
    ], entries, { testid: "ledger", key: e => e.request_id, onclick: open, empty: "No entries match." })
      : table([
        { title: "Time", cell: e => time(e.timestamp) },
        { title: "Kind", cell: e => badge(e.kind, "info") },
        { title: "Actor / action", cell: e => e.kind === "admin" ? el("span", null, el("strong", null, e.actor), ` ${e.action}`) : `${e.count ?? ""} ${e.reason ?? ""}` },
        { title: "Target", cell: e => e.target ?? e.request_id ?? "—" },
        { title: "Change", cell: e => e.kind === "admin" ? `${e.before ?? "—"} → ${e.after ?? "—"}` : "" },
        { title: "Reason", cell: e => e.reason ?? "" },
        { title: "Policy", cell: e => e.policy_version ? el("a", { href: `#/policy/${e.policy_version}` }, `v${e.policy_version}`) : "—" },
      ], entries, { testid: "ledger", onclick: open, empty: "No entries match." })));
}

function toLocalInput(iso) {
  const date = new Date(iso);
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

async function ledgerEntryPage(main, requestId) {
  main.append(head(`Request ${requestId}`, "What the gateway decided, every control's verdict, and the policy version in force.",
    el("a", { href: "#/ledger", class: "button" }, "← Ledger")));
  const [entry] = await api(`/ledger${query({ request_id: requestId, kind: "any" })}`);
  if (!entry) { main.append(el("div", { class: "panel empty" }, "No such request in your scope.")); return; }
  const entryFacts = [
    ["Time", time(entry.timestamp)], ["Decision", el("span", null, decisionBadge(entry.decision), " ", entry.reasons.map(r => el("code", null, `${r} `)))],
    ["Policy version", el("a", { href: `#/policy/${entry.policy_version}`, "data-testid": "policy-link" }, `v${entry.policy_version}`)],
    ["Policy hash", el("span", { class: "mono small" }, entry.policy_hash)],
    ["Tenant / service", `${entry.tenant ?? "—"} / ${entry.service ?? "—"}`], ["Consumer", `${entry.consumer ?? "unidentified"} (${entry.category ?? "—"})`],
    ["Credential", entry.credential_id ?? "—"], ["Endpoint", `${entry.method} ${entry.endpoint}${entry.stream ? " (stream)" : ""}`],
    ["Model", `${entry.model ?? "—"} → ${entry.model_served ?? "—"} via ${entry.provider ?? "—"}`],
    ["Status / outcome", `${entry.status} · ${entry.outcome}`], ["Tokens in / out", `${entry.input_tokens ?? "—"} / ${entry.output_tokens ?? "—"}${entry.tokens_estimated ? " (estimated)" : ""}`],
    ["Cost", entry.cost === null ? "—" : money(entry.cost, entry.currency ?? "USD")],
    ["Time in gateway / upstream", `${entry.gateway_ms} ms / ${entry.upstream_ms ?? "—"} ms`], ["Node / chain", entry.node_id],
    ["Client", entry.client_address ?? "—"], ["Agent run / on behalf of", `${entry.agent_run ?? "—"} / ${entry.on_behalf_of ?? "—"}`],
    ["Prompt SHA-256", el("span", { class: "mono small" }, entry.prompt_sha256 ?? "—")],
  ];
  main.append(el("div", { class: "grid two" },
    el("section", { class: "panel" }, el("h2", null, "Controls, in the order they ran"),
      table([
        { title: "Control", cell: c => el("code", null, c.control) },
        { title: "Scope", cell: c => c.scope ?? "—" },
        { title: "Verdict", cell: c => decisionBadge(c.decision) },
        { title: "Limit", num: true, cell: c => c.limit ?? "—" },
        { title: "Used", num: true, cell: c => c.used ?? "—" },
        { title: "Requested", num: true, cell: c => c.requested ?? "—" },
        { title: "Detail", cell: c => c.detail ?? "" },
      ], entry.controls ?? [], { testid: "controls", empty: "No controls ran: the request was refused before them (bad input or an unknown key)." })),
    el("section", { class: "panel" }, el("h2", null, "Entry"), facts(entryFacts))));
  if (entry.consumer && entry.model) {
    const approval = el("section", { class: "panel" }, el("h2", null, "Who approved this access"));
    main.append(approval);
    try {
      const a = await api(`/requests/${encodeURIComponent(requestId)}/approval`);
      if (!a.source) { approval.append(el("p", { class: "muted" }, `No entitlement of ${entry.consumer} covered ${entry.model} under policy version ${a.policy_version}.`)); return; }
      approval.append(facts([
        ["Entitlement", a.source ?? "—"], ["Models", (a.models ?? []).join(", ") || "—"], ["Approved by", a.approved_by ?? "—"], ["Ticket", a.ticket ?? "—"],
        ["Valid", `${time(a.valid_from)} – ${a.valid_until ? time(a.valid_until) : "no end"}`], ["Access request", a.access_request?.id ?? "—"],
      ]));
    } catch (error) { approval.append(errorBox(error)); }
  }
  main.append(el("section", { class: "panel" }, el("h2", null, "Canonical record"), el("pre", null, JSON.stringify(entry, null, 2))));
}

// ---------------------------------------------------------------------------------------------------------------
// Policy versions and diffs

async function policyPage(main, [version, other]) {
  const history = (await api("/policy/versions")).sort((a, b) => b.version - a.version);
  const latest = history[0]?.version ?? 0;
  if (version && !other) return policyVersionPage(main, Number(version), history);
  const to = Number(other ?? latest);
  const from = Number(version ?? Math.max(1, to - 1));
  const pick = (name, value) => el("select", { name, "aria-label": name }, history.map(v => el("option", { value: v.version, selected: v.version === value }, `v${v.version} · ${v.author ?? "outside your scope"}`)));
  const fromSelect = pick("from", from);
  const toSelect = pick("to", to);
  const form = el("form", { class: "filters" }, el("label", null, "From", fromSelect), el("label", null, "To", toSelect), el("button", { type: "submit", class: "primary" }, "Compare"));
  form.addEventListener("submit", event => { event.preventDefault(); location.hash = `#/policy/${fromSelect.value}/${toSelect.value}`; });
  main.append(head("Policy", "Every version: who made it, why, and what changed. Every decision in the ledger names the version in force."));
  main.append(el("section", { class: "panel" }, el("h2", null, "Versions"), table([
    { title: "Version", cell: v => el("a", { href: `#/policy/${v.version}` }, `v${v.version}`) },
    { title: "Author", cell: v => v.author ?? el("span", { class: "muted" }, "—") },
    { title: "Reason", cell: v => v.reason ?? el("span", { class: "muted" }, "a change outside your scope") },
    { title: "Created", cell: v => time(v.created_at) },
    { title: "SHA-256", cell: v => el("span", { class: "mono small" }, v.sha256.slice(0, 16)) },
  ], history, { testid: "versions", key: v => String(v.version) })));
  const diffPanel = el("section", { class: "panel" }, el("h2", null, "Compare two versions"), form);
  main.append(diffPanel);
  if (history.length > 1 || other) {
    const diff = await api(`/policy/diff${query({ from, to })}`);
    diffPanel.append(el("h3", null, `v${diff.from.version} → v${diff.to.version}: ${diff.changes.length} change${diff.changes.length === 1 ? "" : "s"}`),
      diff.changes.length ? el("ul", { class: "changes", "data-testid": "changes" }, diff.changes.map(c => el("li", null, c))) : el("p", { class: "muted" }, "The two versions are the same."),
      el("h3", null, "YAML"), diffView(diff.lines));
  }
}

// A line diff with unchanged stretches folded to three lines of context.
function diffView(lines) {
  const keep = lines.map(() => false);
  lines.forEach((line, i) => { if (line.kind !== "same") for (let j = Math.max(0, i - 3); j <= Math.min(lines.length - 1, i + 3); j++) keep[j] = true; });
  const out = [];
  let folded = 0;
  lines.forEach((line, i) => {
    if (!keep[i]) { folded++; return; }
    if (folded) { out.push(el("div", { class: "fold" }, `… ${folded} unchanged line${folded === 1 ? "" : "s"}`)); folded = 0; }
    out.push(el("div", { class: line.kind }, line.text));
  });
  if (folded) out.push(el("div", { class: "fold" }, `… ${folded} unchanged line${folded === 1 ? "" : "s"}`));
  return el("pre", { class: "diff", "data-testid": "diff" }, out);
}

async function policyVersionPage(main, number, history) {
  const detail = await api(`/policy/versions/${number}`);
  const v = detail.version;
  main.append(head(`Policy version ${v.version}`, v.author == null ? `${time(v.created_at)} · a change outside your scope` : `${v.author} · ${time(v.created_at)} · ${v.reason}`,
    el("div", { class: "row" },
      number > 1 ? el("a", { href: `#/policy/${number - 1}/${number}`, class: "button" }, `Diff with v${number - 1}`) : null,
      el("a", { href: "#/policy", class: "button" }, "All versions"))));
  main.append(el("div", { class: "grid two" },
    el("section", { class: "panel" }, el("h2", null, "YAML"), el("pre", { "data-testid": "yaml" }, detail.yaml)),
    el("section", { class: "panel" }, el("h2", null, number > 1 ? `Changes from v${number - 1}` : "The first version"),
      facts([["SHA-256", el("span", { class: "mono small" }, v.sha256)], ["In force", number === history[0]?.version ? "now" : "superseded"]]),
      detail.changes.length ? el("ul", { class: "changes", "data-testid": "changes" }, detail.changes.map(c => el("li", null, c))) : el("p", { class: "muted" }, "No changes."))));
}

// ---------------------------------------------------------------------------------------------------------------
// Reports

async function download(path, fallbackName) {
  try {
    const result = await api(path, { raw: true });
    const name = /filename="([^"]+)"/.exec(result.disposition ?? "")?.[1] ?? fallbackName;
    const url = URL.createObjectURL(new Blob([result.text], { type: result.type }));
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    toast(error.message, true);
  }
}

function downloads(path, name) {
  return el("div", { class: "row" }, ["md", "json", "html"].map(format =>
    el("button", { type: "button", class: "small", "data-download": format, onclick: () => download(`${path}${path.includes("?") ? "&" : "?"}format=${format}`, `${name}.${format}`) },
      `Download ${format.toUpperCase()}`)));
}

async function reportsPage(main, [filter = ""]) {
  main.append(head("Reports", "The incident evidence pack for one subject and window, and the compliance posture from live evidence."));
  const params = Object.fromEntries(new URLSearchParams(filter));
  const now = new Date();
  const inputs = {
    subject: el("select", { name: "subject" }, ["consumer", "credential", "service", "tenant"].map(s => el("option", { value: s, selected: s === (params.subject ?? "consumer") }, s))),
    id: el("input", { name: "id", required: true, value: params.id ?? "", placeholder: "support-web", list: "subjects" }),
    from: el("input", { name: "from", type: "datetime-local", value: toLocalInput(params.from ?? new Date(now - 86400000).toISOString()) }),
    to: el("input", { name: "to", type: "datetime-local", value: toLocalInput(params.to ?? new Date(now.getTime() + 60000).toISOString()) }),
  };
  const consumers = await api("/consumers").catch(() => []);
  const form = el("form", { class: "filters", "data-testid": "incident-form" }, Object.entries(inputs).map(([k, i]) => el("label", null, k, i)),
    el("datalist", { id: "subjects" }, consumers.map(c => el("option", { value: c.id }))),
    el("button", { type: "submit", class: "primary" }, "Build the pack"));
  form.addEventListener("submit", event => {
    event.preventDefault();
    location.hash = `#/reports/${new URLSearchParams({ subject: inputs.subject.value, id: inputs.id.value.trim(), from: new Date(inputs.from.value).toISOString(), to: new Date(inputs.to.value).toISOString() })}`;
  });
  const incident = el("section", { class: "panel" }, el("h2", null, "Incident evidence pack"), form);
  main.append(incident);
  if (params.id) {
    const path = `/reports/incident${query({ subject: params.subject, id: params.id, from: params.from, to: params.to })}`;
    try {
      const report = await api(path);
      incident.append(incidentView(report), downloads(path, `incident-${params.subject}-${params.id}`));
    } catch (error) { incident.append(errorBox(error)); }
  }
  const posture = el("section", { class: "panel" }, el("h2", null, "Posture (NIST CSF 2.0, AI RMF)"));
  main.append(posture);
  if (!can("read_posture") || state.me.tenants.length || state.me.services.length) {
    posture.append(el("p", { class: "muted" }, "The posture report covers the whole gateway; it is for gateway-wide platform admins and security auditors."));
    return;
  }
  const build = el("button", { type: "button", class: "primary", "data-action": "posture" }, "Build the posture report");
  posture.append(build);
  build.addEventListener("click", async () => {
    build.disabled = true;
    try {
      const report = await api("/reports/posture");
      build.replaceWith(postureView(report), downloads("/reports/posture", "posture"));
    } catch (error) { posture.append(errorBox(error)); build.disabled = false; }
  });
}

function incidentView(r) {
  const s = r.summary;
  return el("div", { "data-testid": "incident-report" },
    el("h3", null, `${r.subject.kind} ${r.subject.id}, ${time(r.from)} – ${time(r.to)}`),
    el("div", { class: "cards" }, card("Requests", count(s.requests), "incident-requests"), card("Refused", count(s.denied + s.throttled), "incident-refused"),
      card("Spend", money(s.spend, s.currency ?? "USD"), "incident-spend"), card("Chain", r.chain.status.replace(/_/g, " "), "incident-chain")),
    facts([
      ["Classification", r.classification.primary ? badge(r.classification.primary.replace(/_/g, " "), "warn") : "nothing found"],
      ["Why", r.classification.explanation], ["Policy versions", r.policy_versions.map(v => `v${v.version ?? v.number}`).join(", ") || "—"],
      ["Chain", r.chain.detail],
    ]),
    el("h3", null, "Findings"),
    table([
      { title: "Severity", cell: f => badge(f.severity, { high: "bad", critical: "bad", medium: "warn", low: "info" }[f.severity]) },
      { title: "Class", cell: f => f.class.replace(/_/g, " ") },
      { title: "Finding", cell: f => el("div", null, el("strong", null, f.title), el("br"), el("span", { class: "small" }, f.detail)) },
    ], r.findings, { testid: "findings", empty: "No findings." }),
    el("h3", null, "Timeline (latest)"),
    table([
      { title: "Time", cell: t => time(t.at) }, { title: "Kind", cell: t => t.kind }, { title: "Who", cell: t => t.who }, { title: "What", cell: t => t.what },
      { title: "Decision", cell: t => t.decision ? decisionBadge(t.decision) : "" },
    ], r.timeline.events.slice(-25).reverse(), { empty: "Nothing happened in the window." }));
}

function postureView(r) {
  return el("div", { "data-testid": "posture-report" },
    el("div", { class: "cards" }, card("Pass", count(r.summary.pass), "posture-pass"), card("Warn", count(r.summary.warn), "posture-warn"),
      card("Fail", count(r.summary.fail), "posture-fail"), card("Policy version", r.policy_version ? `v${r.policy_version}` : "—", "posture-version")),
    table([
      { title: "Control", cell: c => el("div", null, el("strong", null, c.id), el("br"), el("span", { class: "small muted" }, c.framework)) },
      { title: "Asks", cell: c => el("span", { class: "small" }, c.asks) },
      { title: "Status", cell: c => statusBadge(c.status) },
      { title: "Evidence", cell: c => el("div", { class: "small" }, c.evidence, c.items.filter(i => i.status !== "pass").slice(0, 5).map(i => el("span", { class: "gap" }, `${i.subject}: ${i.detail}`))) },
    ], r.controls, { testid: "posture-controls" }));
}
