// The inspection page: plain fetch calls to the service's JSON API, no build step.
"use strict";
const $ = (id) => document.getElementById(id);
let current = null;  // the result on show
const objectUrls = [];

function keyHeaders() {
  const key = $("api-key").value.trim();
  return key ? {"X-API-Key": key} : {};
}

async function call(path, options = {}) {
  const response = await fetch(path, {...options, headers: {...keyHeaders(), ...(options.headers || {})}});
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// <img src> cannot send the API key header, so images are fetched and shown as blob URLs.
async function showImage(img, url) {
  const blob = await (await call(url)).blob();
  const objectUrl = URL.createObjectURL(blob);
  objectUrls.push(objectUrl);
  img.src = objectUrl;
}

function regionText(r) {
  const type = r.defect_type ? `${r.defect_type} (${Math.round(100 * r.type_confidence)}% sure) ` : "";
  return `${type}at the ${r.grid.join(", ")}: ${(100 * r.area_fraction).toFixed(2)}% of the image, severity ${r.severity}`;
}

async function showResult(result) {
  current = result;
  objectUrls.splice(0).forEach(URL.revokeObjectURL);
  $("result").hidden = false;
  $("verdict").textContent = result.anomalous ? "Anomalous" : "Normal";
  $("verdict").className = result.anomalous ? "anomalous" : "normal";
  $("score").textContent = `score ${result.score.toFixed(4)} (${result.normalized_score.toFixed(2)} x threshold) - ${result.image}`;
  $("findings").replaceChildren(...(result.regions.length ? result.regions : [null]).map((r) => {
    const li = document.createElement("li");
    li.textContent = r ? regionText(r) : "no anomalous region";
    return li;
  }));
  $("explanation").textContent = `${result.explanation.text} (${result.explanation.source})`;
  $("feedback-status").textContent = result.feedback_status ? `judged: ${result.feedback_status}` : "";
  $("chat-log").replaceChildren();
  const turns = await (await call(`/results/${result.id}/chat`)).json();
  turns.forEach((t) => addTurn(t.role, t.content));
  await Promise.all(["image", "overlay", "mask"].map((kind) => showImage($(`img-${kind}`), result.urls[kind])));
}

function addTurn(role, text) {
  const p = document.createElement("p");
  p.className = role;
  p.textContent = `${role === "user" ? "you" : "anomalens"}: ${text}`;
  $("chat-log").append(p);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
}

async function inspect(file) {
  setStatus(`inspecting ${file.name} ...`);
  const form = new FormData();
  form.append("file", file);
  try {
    const result = await (await call("/inspect", {method: "POST", body: form})).json();
    await showResult(result);
    setStatus(`inspected ${file.name}`);
    loadPast();
    loadHealth();
  } catch (error) {
    setStatus(`could not inspect ${file.name}: ${error.message}`, true);
  }
}

async function ask(event) {
  event.preventDefault();
  const message = $("chat-input").value.trim();
  if (!current || !message) return;
  addTurn("user", message);
  $("chat-input").value = "";
  try {
    const answer = await (await call(`/results/${current.id}/chat`, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({message})})).json();
    addTurn("assistant", answer.reply);
  } catch (error) {
    addTurn("assistant", `(error ${error.message})`);
  }
}

// what a false alarm taught the model: "learned as mark N (version V)", or why not
function learningText(learning) {
  if (!learning) return "";
  if (learning.outcome === "learned") {
    const marks = learning.report.learned.map((mark) => mark.mark).join(", ");
    return `; learned as mark ${marks} (model version ${learning.report.version})`;
  }
  const said = { refused: "refused", queued: "queued", not_learned: "not learned" }[learning.outcome];
  return `; ${said}: ${learning.reason}`;
}

// a learned false alarm can be taken back at once: the button undoes its mark (a new model version)
function offerUndo(learning) {
  const button = $("undo-mark");
  button.hidden = !(learning && learning.outcome === "learned");
  if (!button.hidden) {
    button.dataset.model = learning.model;
    button.dataset.mark = learning.report.learned[0].mark;
  }
}

async function undoMark() {
  const {model, mark} = $("undo-mark").dataset;
  try {
    const report = await (await call(`/models/${encodeURIComponent(model)}/marks/${mark}`, {method: "DELETE"})).json();
    $("feedback-status").textContent = `mark ${mark} undone (model version ${report.version})`;
    $("undo-mark").hidden = true;
  } catch (error) {
    $("feedback-status").textContent = `not undone: ${error.message}`;
  }
}

async function judge(status) {
  if (!current) return;
  const body = {status};
  if (status === "corrected") body.defect_type = $("correct-type").value.trim();
  try {
    const receipt = await (await call(`/results/${current.id}/feedback`, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})).json();
    $("feedback-status").textContent = `saved: ${receipt.status}${learningText(receipt.learning)}`;
    offerUndo(receipt.learning);
    loadPast();
  } catch (error) {
    $("feedback-status").textContent = `not saved: ${error.message}`;
  }
}

function filterQuery() {
  const value = $("filter").value;
  return value ? `anomalous=${value}&` : "";
}

async function download(format) {
  const blob = await (await call(`/results/export?${filterQuery()}format=${format}`)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `inspections.${format}`;
  link.click();
}

// The health check needs no key: the loaded model, and a banner while the drift watch warns (GET /drift says why).
async function loadHealth() {
  const health = await (await fetch("/health")).json();
  $("model").textContent = `model: ${health.model}`;
  $("drift-banner").hidden = !health.drift_warning;
  $("drift-banner").textContent = health.drift_warning
    ? "Drift warning: the image scores have moved away from this station's usual ones. Check the lighting, focus and material; the report and GET /drift say more."
    : "";
}

async function loadPast() {
  try {
    const results = await (await call(`/results?${filterQuery()}limit=50`)).json();
    $("past").replaceChildren(...results.map((r) => {
      const row = document.createElement("tr");
      const cells = [new Date(r.created_at * 1000).toLocaleString(), r.image, r.anomalous ? "anomalous" : "normal",
                     r.score.toFixed(4), r.regions.length, r.feedback_status || ""];
      cells.forEach((text) => { const td = document.createElement("td"); td.textContent = text; row.append(td); });
      row.addEventListener("click", () => showResult(r));
      return row;
    }));
  } catch (error) {
    setStatus(`could not list past inspections: ${error.message}`, true);
  }
}

async function openReport(event) {
  event.preventDefault();
  const page = await (await call(`/report?${filterQuery()}`)).text();
  window.open(URL.createObjectURL(new Blob([page], {type: "text/html"})), "_blank");
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = localStorage.getItem("anomalens-api-key") || "";
  $("api-key").addEventListener("change", () => { localStorage.setItem("anomalens-api-key", $("api-key").value); loadPast(); });
  $("file").addEventListener("change", () => $("file").files[0] && inspect($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) inspect(e.dataTransfer.files[0]);
  });
  $("chat-form").addEventListener("submit", ask);
  document.querySelectorAll("#feedback-form button[data-status]").forEach((b) => b.addEventListener("click", () => judge(b.dataset.status)));
  $("undo-mark").addEventListener("click", undoMark);
  $("refresh").addEventListener("click", loadPast);
  $("filter").addEventListener("change", loadPast);
  $("export-csv").addEventListener("click", (e) => { e.preventDefault(); download("csv"); });
  $("export-json").addEventListener("click", (e) => { e.preventDefault(); download("json"); });
  $("report-link").addEventListener("click", openReport);
  loadHealth();
  loadPast();
});
