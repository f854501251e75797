// The playground: a photo in, the faces boxed and answered, the request as code. It uses the
// server's public API only (/v1/models, /v1/faces/schema, /v1/faces/analyze).

import { ServerError, call, readAsDataUrl, storeKey, storedKey } from "./api.js";
import { drawOverlay, label, renderCards, renderStamps } from "./render.js";
import { curlSnippet, pythonSnippet } from "./snippets.js";

const ANALYZE = "/v1/faces/analyze";
const $ = (id) => document.getElementById(id);

const state = { file: null, photoUrl: null, schema: { properties: {} }, run: 0 };

function attributeBoxes() {
  return [...$("attribute-list").querySelectorAll("input[type=checkbox]")];
}

// The JSON fields the form chooses, besides the image; what the server defaults is left out.
function requestFields() {
  const body = {};
  if ($("model").value) {
    body.model = $("model").value;
  }
  const boxes = attributeBoxes();
  const chosen = boxes.filter((box) => box.checked).map((box) => box.value);
  if (chosen.length !== boxes.length) {
    body.attributes = chosen;
  }
  if ($("confidence").checked) {
    body.confidence = true;
  }
  if ($("min-confidence").value !== "") {
    body.min_confidence = Number($("min-confidence").value);
  }
  if ($("max-faces").value !== "") {
    body.max_faces = Number($("max-faces").value);
  }
  if (!$("detect").checked) {
    body.detect = false;
  }
  return body;
}

function updateSnippets() {
  const request = {
    url: new URL(ANALYZE, window.location.href).href,
    body: requestFields(),
    fileName: state.file ? state.file.name : "photo.jpg",
    mediaType: state.file ? state.file.type || "application/octet-stream" : "image/jpeg",
    withKey: Boolean(storedKey()),
  };
  $("curl-code").textContent = curlSnippet(request);
  $("python-code").textContent = pythonSnippet(request);
}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(error) {
  const box = $("error");
  box.textContent = error instanceof ServerError ? error.describe() : `The page failed: ${error}`;
  box.hidden = false;
  if (error instanceof ServerError && error.status === 401) {
    askForKey();
  }
}

function clearResult() {
  $("error").hidden = true;
  $("overlay").replaceChildren();
  $("faces").replaceChildren();
  $("stamps").hidden = true;
  $("caption").textContent = "";
}

function askForKey() {
  $("key-form").hidden = false;
  $("api-key").focus();
}

function fillModels(models) {
  const select = $("model");
  const current = select.value;
  select.replaceChildren(
    ...models.map((card) => {
      const text = card.parent ? `${card.id} (adapter of ${card.parent})` : card.id;
      return new Option(text, card.id, false, card.id === current);
    }),
  );
}

function fillAttributes(schema) {
  state.schema = schema;
  const list = $("attribute-list");
  const wasOff = new Set(attributeBoxes().filter((b) => !b.checked).map((b) => b.value));
  list.replaceChildren(
    ...Object.entries(schema.properties || {}).map(([name, property]) => {
      const row = document.createElement("div");
      row.className = "check";
      const box = document.createElement("input");
      Object.assign(box, { type: "checkbox", id: `attr-${name}`, value: name });
      box.checked = !wasOff.has(name);
      const text = document.createElement("label");
      text.htmlFor = box.id;
      text.textContent = label(name);
      text.title = property.description || "";
      row.append(box, text);
      return row;
    }),
  );
}

// What the server serves: its models and adapters, and the attributes in force.
async function loadServer() {
  try {
    const [models, schema] = await Promise.all([call("/v1/models"), call("/v1/faces/schema")]);
    fillModels(models.data.data);
    fillAttributes(schema.data);
    $("error").hidden = true;
    setStatus(state.file ? "Ready: press Analyze." : "Choose a photo to begin.");
  } catch (error) {
    setStatus("The server did not answer the page's first calls.");
    showError(error);
  }
  updateSnippets();
}

function setPhoto(file) {
  if (!file) {
    return;
  }
  state.file = file;
  if (state.photoUrl) {
    URL.revokeObjectURL(state.photoUrl);
  }
  state.photoUrl = URL.createObjectURL(file);
  $("photo").src = state.photoUrl;
  $("photo").alt = `The photo: ${file.name}`;
  $("figure").hidden = false;
  clearResult();
  updateSnippets();
  analyze();
}

async function analyze() {
  if (!state.file) {
    setStatus("Choose a photo first.");
    $("photo-file").focus();
    return;
  }
  const run = ++state.run; // a newer photo or click makes this one's answer stale
  const button = $("analyze");
  button.disabled = true;
  setStatus("Analyzing…");
  clearResult();
  try {
    const body = { image: await readAsDataUrl(state.file), ...requestFields() };
    const result = await call(ANALYZE, { body });
    await $("photo").decode();
    if (run === state.run) {
      show(result);
    }
  } catch (error) {
    if (run === state.run) {
      setStatus("The server refused the request.");
      showError(error);
    }
  } finally {
    if (run === state.run) {
      button.disabled = false;
    }
  }
}

function show(result) {
  const faces = result.data.faces;
  const photo = $("photo");
  drawOverlay($("overlay"), photo.naturalWidth, photo.naturalHeight, faces);
  renderCards($("faces"), faces, state.schema);
  renderStamps($("stamps"), result);
  const count = faces.length === 1 ? "1 face" : `${faces.length} faces`;
  $("caption").textContent = `${count}, numbered as the cards below.`;
  photo.alt = `The photo, ${count} boxed.`;
  setStatus(`${count} in ${Math.round(result.ms)} ms.`);
}

// Drop and paste put the file into the real <input type=file>, so it says what was chosen.
function takeFile(files) {
  const file = [...(files || [])].find((f) => f.type.startsWith("image/")) || files?.[0];
  if (file) {
    const transfer = new DataTransfer();
    transfer.items.add(file);
    $("photo-file").files = transfer.files;
    setPhoto(file);
  }
}

function wireDropZone() {
  const zone = $("drop");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    takeFile(event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    if (event.clipboardData.files.length > 0) {
      event.preventDefault();
      takeFile(event.clipboardData.files);
    }
  });
  $("photo-file").addEventListener("change", (event) => setPhoto(event.target.files[0]));
}

async function copy(button) {
  const code = $(button.dataset.copy);
  button.dataset.label ||= button.textContent;
  try {
    await navigator.clipboard.writeText(code.textContent);
    button.textContent = "Copied";
  } catch {
    // No clipboard API off https and localhost: select the text for the user's own copy.
    window.getSelection().selectAllChildren(code);
    button.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => (button.textContent = button.dataset.label), 2000);
}

function wire() {
  wireDropZone();
  $("request").addEventListener("submit", (event) => {
    event.preventDefault();
    analyze();
  });
  $("request").addEventListener("input", updateSnippets);
  $("request").addEventListener("change", updateSnippets);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    storeKey($("api-key").value.trim());
    $("api-key").value = "";
    $("api-key").placeholder = storedKey() ? "key set for this tab" : "";
    loadServer();
  });
  for (const [id, on] of [
    ["attributes-all", true],
    ["attributes-none", false],
  ]) {
    $(id).addEventListener("click", () => {
      attributeBoxes().forEach((box) => (box.checked = on));
      updateSnippets();
    });
  }
  document.querySelectorAll("button.copy").forEach((button) => {
    button.addEventListener("click", () => copy(button));
  });
}

wire();
if (storedKey()) {
  $("key-form").hidden = false;
  $("api-key").placeholder = "key set for this tab";
}
loadServer();
