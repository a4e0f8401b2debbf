// The dashboard: both metrics for a year (charts and tables) and the latest uploads, polled while
// loads run. Plain DOM; every value from the API is set as text, never as HTML.
"use strict";

const UPLOADS_SHOWN = 15;
const POLL_UPLOADS_MS = 2000;
const POLL_METRICS_MS = 5000;
const KEY_STORE = "hiring.apiKey";
const QUARTERS = ["Q1", "Q2", "Q3", "Q4"];
const COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];

const $ = (id) => document.getElementById(id);
const charts = {};
const reasonsSeen = new Map(); // upload id -> [rows_rejected, reasons list]
let metricsVersion = "";

class NeedKey extends Error {}

function apiKey() {
  return $("api-key").value.trim() || localStorage.getItem(KEY_STORE) || "";
}

async function getJson(path) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const resp = await fetch(path, { headers });
  if (resp.status === 401 || resp.status === 403) {
    $("key-label").hidden = false;
    throw new NeedKey(resp.status === 401 ? "this API needs a key with the read scope" : "the API key is not accepted");
  }
  if (!resp.ok) {
    let message = `${resp.status}`;
    try { message = (await resp.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${message}`);
  }
  return resp.json();
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fillTable(id, rows, columns) {
  const body = $(id).querySelector("tbody");
  const fresh = document.createDocumentFragment();
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const [name, cls] of columns) cell(tr, r[name], cls);
    fresh.appendChild(tr);
  }
  body.replaceChildren(fresh);
}

function drawChart(name, config) {
  if (typeof Chart === "undefined") return; // the table still shows the numbers
  if (charts[name]) {
    charts[name].data = config.data;
    charts[name].update("none");
  } else {
    charts[name] = new Chart($(name), config);
  }
}

function renderHires(rows) {
  const byDept = new Map();
  for (const r of rows) {
    const q = byDept.get(r.department) || [0, 0, 0, 0];
    QUARTERS.forEach((k, i) => { q[i] += r[k]; });
    byDept.set(r.department, q);
  }
  const labels = [...byDept.keys()];
  drawChart("hires-chart", {
    type: "bar",
    data: {
      labels,
      datasets: QUARTERS.map((k, i) => ({ label: k, data: labels.map((d) => byDept.get(d)[i]), backgroundColor: COLORS[i] })),
    },
    options: { animation: false, maintainAspectRatio: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  });
  $("hires-count").textContent = String(rows.length);
  fillTable("hires-table", rows, [["department"], ["job"], ["Q1", "num"], ["Q2", "num"], ["Q3", "num"], ["Q4", "num"]]);
}

function renderDepartments(rows) {
  drawChart("departments-chart", {
    type: "bar",
    data: { labels: rows.map((r) => r.department), datasets: [{ label: "hired", data: rows.map((r) => r.hired), backgroundColor: COLORS[0] }] },
    options: { animation: false, maintainAspectRatio: false, indexAxis: "y", scales: { x: { beginAtZero: true } } },
  });
  fillTable("departments-table", rows, [["id", "num"], ["department"], ["hired", "num"]]);
}

async function refreshMetrics(year) {
  const [hires, departments] = await Promise.all([
    getJson(`metrics/hires?year=${year}`),
    getJson(`metrics/departments?year=${year}`),
  ]);
  renderHires(hires);
  renderDepartments(departments);
  document.body.dataset.metricsYear = String(year);
}

async function reasonsOf(upload) {
  if (!upload.rows_rejected) return [];
  const seen = reasonsSeen.get(upload.id);
  if (seen && seen[0] === upload.rows_rejected) return seen[1];
  const body = await getJson(`uploads/${encodeURIComponent(upload.id)}/rejects/reasons`);
  const list = body.reasons.map((r) => `${r.count} × ${r.reason}`);
  reasonsSeen.set(upload.id, [upload.rows_rejected, list]);
  return list;
}

async function refreshUploads() {
  const page = await getJson(`uploads?limit=${UPLOADS_SHOWN}`);
  const reasons = await Promise.all(page.uploads.map(reasonsOf));
  const body = $("uploads-table").querySelector("tbody");
  const fresh = document.createDocumentFragment();
  page.uploads.forEach((u, i) => {
    const tr = document.createElement("tr");
    tr.dataset.id = u.id;
    cell(tr, new Date(u.created_at).toLocaleString());
    cell(tr, u.id, "key");
    cell(tr, u.table);
    cell(tr, u.key, "key");
    cell(tr, u.status, `status-${u.status}`);
    cell(tr, u.rows_loaded.toLocaleString(), "num");
    cell(tr, u.rows_rejected.toLocaleString(), "num");
    const td = cell(tr, u.error || "");
    if (reasons[i].length) {
      const ul = document.createElement("ul");
      ul.className = "reasons";
      for (const text of reasons[i]) {
        const li = document.createElement("li");
        li.textContent = text;
        ul.appendChild(li);
      }
      td.appendChild(ul);
    }
    fresh.appendChild(tr);
  });
  body.replaceChildren(fresh);
  // a load that finished changes the metrics: redraw them now rather than at the next tick
  const version = page.uploads.map((u) => `${u.id}:${u.status}:${u.rows_loaded}`).join(",");
  const changed = version !== metricsVersion;
  metricsVersion = version;
  const active = page.uploads.some((u) => u.status === "queued" || u.status === "processing");
  $("live").textContent = active ? "loading… (live)" : `updated ${new Date().toLocaleTimeString()}`;
  return changed;
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? err.message : "";
  box.hidden = !err;
}

function year() {
  const value = Number.parseInt($("year").value, 10);
  return Number.isInteger(value) && value >= 1 && value <= 9999 ? value : 2021;
}

async function tick(withMetrics) {
  try {
    const changed = await refreshUploads();
    if (withMetrics || changed) await refreshMetrics(year());
    showError(null);
  } catch (err) {
    showError(err);
  }
}

function start() {
  const params = new URLSearchParams(location.search);
  if (params.has("year")) $("year").value = params.get("year");
  for (const el of document.querySelectorAll(".year")) el.textContent = String(year());
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORE, key);
    for (const el of document.querySelectorAll(".year")) el.textContent = String(year());
    history.replaceState(null, "", `?year=${year()}`);
    tick(true);
  });
  tick(true);
  setInterval(() => tick(false), POLL_UPLOADS_MS);
  setInterval(() => refreshMetrics(year()).catch(showError), POLL_METRICS_MS);
}

document.addEventListener("DOMContentLoaded", start);
