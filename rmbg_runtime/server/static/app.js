// rmbg's browser page: every image picked, dropped or pasted is sent to POST v1/remove (a few at a
// time) and shown as it finishes. Plain ES module, no dependencies: the page must work air-gapped.

const MAX_IN_FLIGHT = 3;
const MAX_BUSY_RETRIES = 6; // 503s answered by waiting (Retry-After at least) and sending again
const KEY_STORAGE = "rmbg-api-key";
const DEFAULT_OPTIONS = { background: "", maskOnly: false, refine: false, format: "png" };
const HEADLINES = {
  400: "Not an image the server can read",
  401: "The server needs an API key",
  413: "Too large for this server",
  422: "The server refused an option",
  503: "The server stayed busy",
  504: "The server did not finish in time",
};

const $ = (selector, root = document) => root.querySelector(selector);
const items = [];
let newItemOptions = { ...DEFAULT_OPTIONS };
let nextId = 1;

// ---- a few requests at a time -------------------------------------------------------------

let freeSlots = MAX_IN_FLIGHT;
const slotWaiters = [];

function acquireSlot() {
  if (freeSlots > 0) {
    freeSlots--;
    return Promise.resolve();
  }
  return new Promise((resolve) => slotWaiters.push(resolve));
}

function releaseSlot() {
  const next = slotWaiters.shift();
  if (next) next();
  else freeSlots++;
}

async function withSlot(signal, task) {
  await acquireSlot();
  try {
    signal.throwIfAborted();
    return await task();
  } finally {
    releaseSlot();
  }
}

// ---- talking to the server ----------------------------------------------------------------

class RequestError extends Error {}

function query(options) {
  const params = new URLSearchParams({ format: options.format });
  if (options.maskOnly) params.set("mask_only", "true");
  if (options.refine) params.set("refine", "true");
  if (options.background) params.set("background", options.background);
  return params;
}

/** One POST with upload progress (fetch has none); resolves with the response whatever its status. */
function post(item, options, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `v1/remove?${query(options)}`);
    xhr.responseType = "blob";
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) xhr.setRequestHeader("X-Api-Key", key);
    xhr.upload.onprogress = (event) => {
      const fraction = event.lengthComputable ? event.loaded / event.total : undefined;
      showProgress(item, fraction === undefined ? "Uploading…" : `Uploading ${Math.round(fraction * 100)}%`, fraction);
    };
    xhr.upload.onload = () => showProgress(item, "Removing the background…");
    xhr.onload = () => resolve({ status: xhr.status, body: xhr.response, key, header: (name) => xhr.getResponseHeader(name) });
    xhr.onerror = () =>
      reject(new RequestError("The connection failed before the server answered: is it still running? " +
        "A file far over the server's size limit (--max-body-mb) can also be cut off this way."));
    xhr.onabort = () => reject(signal.reason);
    signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(item.file);
  });
}

async function errorDetail(response) {
  try {
    return JSON.parse(await response.body.text()).detail;
  } catch {
    return `HTTP ${response.status}`;
  }
}

function sleep(seconds, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
  });
}

/** The image for these options: asks for an API key on 401, waits out 503s, else throws in words. */
async function removeBackground(item, options, signal) {
  for (let busy = 0; ; ) {
    const response = await post(item, options, signal);
    if (response.status === 200) return response;
    if (response.status === 401 && (await askForKey(response.key))) continue;
    if (response.status === 503 && busy < MAX_BUSY_RETRIES) {
      busy++;
      // Never sooner than Retry-After; later each time, so a long busy spell costs a few tries.
      const wait = Math.min(Math.max(Number(response.header("Retry-After")) || 0, 2 ** (busy - 1)), 60);
      showProgress(item, `Server busy: trying again in ${wait} s (${busy} of ${MAX_BUSY_RETRIES})`);
      await sleep(wait, signal);
      continue;
    }
    const headline = HEADLINES[response.status] ?? `The server answered ${response.status}`;
    throw new RequestError(`${headline}: ${await errorDetail(response)}`);
  }
}

// ---- API key ------------------------------------------------------------------------------

let keyPrompt = null;
let keyDeclined = false;

/** True when there is a key worth sending again. Concurrent 401s share one dialog. */
function askForKey(refusedKey) {
  const current = sessionStorage.getItem(KEY_STORAGE);
  if (current && current !== refusedKey) return Promise.resolve(true); // entered meanwhile
  if (keyDeclined) return Promise.resolve(false);
  keyPrompt ??= openKeyDialog(refusedKey
    ? "The server refused that key. Check it and enter it again."
    : "This server needs an API key.").finally(() => (keyPrompt = null));
  return keyPrompt;
}

function openKeyDialog(reason) {
  const dialog = $("#key-dialog");
  $("#key-reason").textContent = reason;
  $("#key-input").value = sessionStorage.getItem(KEY_STORAGE) ?? "";
  $("#key-button").hidden = false;
  dialog.returnValue = ""; // Escape closes without setting it: an earlier "ok" must not count
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const key = $("#key-input").value.trim();
      const given = dialog.returnValue === "ok" && key !== "";
      if (given) sessionStorage.setItem(KEY_STORAGE, key);
      else if (dialog.returnValue === "ok") sessionStorage.removeItem(KEY_STORAGE);
      keyDeclined = !given;
      if (given) showModel();
      resolve(given);
    }, { once: true });
  });
}

// ---- one image ----------------------------------------------------------------------------

function addFiles(files) {
  keyDeclined = false; // the user acts again: a key may be asked for again
  for (const file of files) {
    const item = { id: nextId++, file, options: { ...newItemOptions }, result: null, mask: null };
    items.push(item);
    item.card = buildCard(item);
    $("#results").append(item.card.root);
    request(item);
  }
  updateToolbar();
}

/** (Re)requests the image with its current options; a request still running for it is dropped. */
async function request(item) {
  item.controller?.abort(new DOMException("replaced by a newer request", "AbortError"));
  const controller = (item.controller = new AbortController());
  const options = { ...item.options };
  item.card.download.hidden = true; // the result shown no longer matches the controls
  setState(item, "waiting");
  showProgress(item, "Waiting for a free slot…");
  updateToolbar();
  const started = performance.now();
  try {
    const response = await withSlot(controller.signal, () => removeBackground(item, options, controller.signal));
    showResult(item, options, response, (performance.now() - started) / 1000);
  } catch (error) {
    if (controller.signal.aborted) return; // superseded or removed: nothing to show
    showError(item, error instanceof RequestError ? error.message : `Unexpected error: ${error}`);
  }
}

function showResult(item, options, response, seconds) {
  const { card } = item;
  releaseResult(item);
  item.result = { url: URL.createObjectURL(response.body), blob: response.body, options };
  if (options.maskOnly) item.mask = { url: item.result.url, owned: false };
  card.download.href = item.result.url;
  card.download.download = downloadName(item.file.name, options);
  card.download.hidden = false;
  showTiming(item, response.header("Server-Timing"), response.header("X-Batch-Size"), seconds);
  setState(item, "done");
  showProgress(item, `Done in ${seconds.toFixed(1)} s`, 1);
  showView(item);
  updateToolbar();
}

function showError(item, message) {
  releaseResult(item);
  item.card.download.hidden = true;
  item.card.timing.replaceChildren();
  setState(item, "error");
  showProgress(item, message, 0);
  showView(item);
  updateToolbar();
}

function releaseResult(item) {
  if (item.result) URL.revokeObjectURL(item.result.url);
  if (item.mask?.owned) URL.revokeObjectURL(item.mask.url);
  item.result = null;
  item.mask = null;
}

function downloadName(fileName, options) {
  const stem = fileName.replace(/\.[^.]*$/, "") || "image";
  return `${stem}-${options.maskOnly ? "mask" : "cutout"}.${options.format}`;
}

function parseServerTiming(header) {
  return (header ?? "").split(",").map((entry) => {
    const [name, ...params] = entry.trim().split(";");
    const dur = params.find((p) => p.trim().startsWith("dur="));
    return { name, ms: dur ? Number(dur.trim().slice(4)) : NaN };
  }).filter((stage) => stage.name && Number.isFinite(stage.ms));
}

function showTiming(item, serverTiming, batchSize, seconds) {
  const rows = parseServerTiming(serverTiming).map(({ name, ms }) => [name, `${ms.toFixed(ms < 10 ? 1 : 0)} ms`]);
  rows.push(["batch", batchSize ?? "?"], ["round trip", `${seconds.toFixed(2)} s`]);
  item.card.timing.replaceChildren(...rows.map(([term, value]) => {
    const row = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value;
    row.append(dt, dd);
    return row;
  }));
}

// ---- the card: preview, slider, mask view, controls ---------------------------------------

function buildCard(item) {
  const root = $("#card-template").content.firstElementChild.cloneNode(true);
  const card = {
    root,
    stage: $(".stage", root),
    before: $(".before", root),
    after: $(".after", root),
    placeholder: $(".placeholder", root),
    split: $(".split", root),
    progress: $(".progress", root),
    status: $(".status", root),
    timing: $(".timing", root),
    download: $(".download", root),
    retry: $(".retry", root),
    background: $(".background", root),
    color: $(".color", root),
    format: $(".format", root),
    maskOnly: $(".mask-only", root),
    refine: $(".refine", root),
  };
  $(".name", root).textContent = item.file.name || "pasted image";
  $(".name", root).title = `${item.file.name} · ${formatBytes(item.file.size)}`;
  item.originalUrl = URL.createObjectURL(item.file);
  card.before.src = item.originalUrl;
  card.before.alt = `Original: ${item.file.name}`;
  card.before.addEventListener("error", () => {
    card.stage.classList.add("no-preview");
    showView(item);
  });
  for (const radio of root.querySelectorAll(".views input")) {
    radio.name = `view-${item.id}`;
    radio.addEventListener("change", () => { card.stage.dataset.view = radio.value; showView(item); });
  }
  card.split.addEventListener("input", () => setSplit(card));
  setSplit(card);
  writeControls(card, item.options);
  for (const control of [card.background, card.color, card.format, card.maskOnly, card.refine]) {
    control.addEventListener("change", () => {
      item.options = readControls(card);
      request(item);
    });
  }
  card.retry.addEventListener("click", () => {
    keyDeclined = false; // the user acts again: a key may be asked for again
    request(item);
  });
  $(".apply-all", root).addEventListener("click", () => applyToAll(item.options));
  $(".remove", root).addEventListener("click", () => removeItem(item));
  return card;
}

function setSplit(card) {
  card.stage.style.setProperty("--split", `${card.split.value}%`);
  card.split.setAttribute("aria-valuetext", `${card.split.value}% original`);
}

function readControls(card) {
  const choice = card.background.value;
  card.color.hidden = choice !== "custom";
  return {
    background: choice === "custom" ? card.color.value : choice,
    format: card.format.value,
    maskOnly: card.maskOnly.checked,
    refine: card.refine.checked,
  };
}

function writeControls(card, options) {
  const preset = ["", "#ffffff", "#000000"].includes(options.background);
  card.background.value = preset ? options.background : "custom";
  if (!preset) card.color.value = options.background;
  card.color.hidden = preset;
  card.format.value = options.format;
  card.maskOnly.checked = options.maskOnly;
  card.refine.checked = options.refine;
}

function applyToAll(options) {
  newItemOptions = { ...options };
  for (const item of items) {
    if (JSON.stringify(item.options) === JSON.stringify(options)) continue;
    item.options = { ...options };
    writeControls(item.card, options);
    request(item);
  }
}

async function showView(item) {
  const { card, result } = item;
  const mask = result && card.stage.dataset.view === "mask" ? await maskOf(item) : null;
  if (item.result !== result) return; // a newer result arrived meanwhile and was shown
  const shown = card.stage.dataset.view === "mask" ? mask : result;
  card.stage.classList.toggle("has-result", Boolean(shown));
  if (shown) {
    card.after.src = shown.url;
    card.after.alt = `${shown === mask ? "Mask" : "Result"}: ${item.file.name}`;
  } else {
    card.after.removeAttribute("src");
  }
  card.placeholder.textContent = placeholderText(item, shown);
}

function placeholderText(item, shown) {
  if (shown) return "";
  if (item.result) return "With a background colour the result has no mask: choose Transparent or Mask only.";
  if (item.state === "error") return "No result";
  return item.card.stage.classList.contains("no-preview") ? "No preview" : "";
}

/** The mask is the cut-out's alpha channel: read back from the result, no second request. */
async function maskOf(item) {
  if (item.mask) return item.mask;
  const { result } = item;
  if (result.options.background) return null;
  const bitmap = await createImageBitmap(result.blob, { premultiplyAlpha: "none", colorSpaceConversion: "none" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const pixels = context.getImageData(0, 0, bitmap.width, bitmap.height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    data[i] = data[i + 1] = data[i + 2] = data[i + 3];
    data[i + 3] = 255;
  }
  context.putImageData(pixels, 0, 0);
  const blob = await canvas.convertToBlob({ type: "image/png" });
  if (item.result !== result) return null;
  item.mask = { url: URL.createObjectURL(blob), owned: true };
  return item.mask;
}

function setState(item, state) {
  item.state = state;
  item.card.root.dataset.state = state;
  item.card.retry.hidden = state !== "error";
}

function showProgress(item, text, fraction) {
  const { progress, status } = item.card;
  status.textContent = text;
  if (fraction === undefined) progress.removeAttribute("value"); // indeterminate
  else progress.value = fraction;
}

function removeItem(item) {
  item.controller?.abort(new DOMException("removed", "AbortError"));
  releaseResult(item);
  URL.revokeObjectURL(item.originalUrl);
  item.card.root.remove();
  items.splice(items.indexOf(item), 1);
  updateToolbar();
}

// ---- the page -----------------------------------------------------------------------------

function updateToolbar() {
  const done = items.filter((item) => item.state === "done").length;
  const failed = items.filter((item) => item.state === "error").length;
  $("#download-all").disabled = done === 0;
  $("#clear").disabled = items.length === 0;
  $("#drop").classList.toggle("compact", items.length > 0);
  const working = items.length - done - failed;
  $("#summary").textContent = items.length === 0 ? ""
    : [`${done} of ${items.length} done`, working && `${working} working`, failed && `${failed} failed`]
      .filter(Boolean).join(" · ");
}

async function downloadAll() {
  for (const item of items.filter((it) => it.state === "done")) {
    item.card.download.click();
    await new Promise((resolve) => setTimeout(resolve, 250)); // browsers drop bursts of downloads
  }
}

function formatBytes(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

async function showModel() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const response = await fetch("v1/model", { headers: key ? { "X-Api-Key": key } : {} }).catch(() => null);
  if (!response?.ok) return;
  const info = await response.json();
  const source = String(info.model?.model?.source ?? "").split(/[\\/]/).pop();
  const { width, height } = info.model?.input ?? {};
  $("#model").textContent = [source, info.model?.model?.backbone, width && `${width}×${height}`, info.backend]
    .filter(Boolean).join(" · ");
}

function wirePage() {
  const drop = $("#drop");
  $("#files").addEventListener("change", (event) => {
    addFiles(event.target.files);
    event.target.value = ""; // picking the same file again is a new image
  });
  // Files dropped anywhere count, so a near miss never navigates away from the page.
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) drop.classList.remove("over");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer?.files.length) addFiles(event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (files.length) addFiles(files);
  });
  $("#download-all").addEventListener("click", downloadAll);
  $("#clear").addEventListener("click", () => [...items].forEach(removeItem));
  $("#key-button").hidden = !sessionStorage.getItem(KEY_STORAGE);
  $("#key-button").addEventListener("click", () => {
    keyDeclined = false;
    openKeyDialog("Enter the key for this server; leave it empty to forget the one kept.");
  });
  showModel();
}

wirePage();
