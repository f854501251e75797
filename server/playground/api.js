// Calls to the server's public API, as any client makes them. The key, when the server wants
// one, lives in sessionStorage: this tab only, gone when it closes, never in localStorage.

const KEY_ITEM = "facellm.apiKey";

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

export function storeKey(key) {
  if (key) {
    sessionStorage.setItem(KEY_ITEM, key);
  } else {
    sessionStorage.removeItem(KEY_ITEM);
  }
}

// An error the server answered: its status and its OpenAI envelope's message and code.
export class ServerError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }

  describe() {
    const code = this.code ? ` ${this.code}` : "";
    return `${this.status}${code}: ${this.message}`;
  }
}

// One call: parsed JSON on 2xx, else a ServerError carrying the server's own message. Also the
// round trip in ms and the request id the server echoes, for the result's stamps.
export async function call(path, { body } = {}) {
  const headers = { Accept: "application/json" };
  const key = storedKey();
  if (key) {
    headers.Authorization = `Bearer ${key}`;
  }
  const init = { method: body === undefined ? "GET" : "POST", headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const start = performance.now();
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ServerError(0, "The server could not be reached.", "network_error");
  }
  const data = await response.json().catch(() => null);
  const ms = performance.now() - start;
  if (!response.ok) {
    const error = data && data.error;
    const message = (error && error.message) || response.statusText || "Request failed.";
    throw new ServerError(response.status, message, error && error.code);
  }
  return { data, ms, requestId: response.headers.get("x-request-id") };
}

// The photo as the data URL the API takes; the browser names its media type.
export function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
