// "Copy as code": the request the page sends, as curl and as Python (httpx). The photo stays a
// file path (its base64 would be megabytes); a key stays an environment variable, never the key.

const KEY_VARIABLE = "FACELLM_API_KEY";

// A request: { url, body (the JSON fields but the image), fileName, mediaType, withKey }.

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

// JSON fields as `"name": value, …`, spaced as people write them.
function jsonFields(body) {
  return Object.entries(body)
    .map(([name, value]) => `${JSON.stringify(name)}: ${JSON.stringify(value)}`)
    .join(", ");
}

// The body is streamed into curl: the image's base64 could be past the longest argument the
// shell allows, and `base64 | tr -d` is the same on Linux and macOS.
export function curlSnippet(request) {
  const fields = jsonFields(request.body);
  const head = `{"image": "data:${request.mediaType};base64,`;
  const tail = fields ? `", ${fields}}` : '"}';
  const lines = [
    `{ printf '%s' ${shellQuote(head)}`,
    `  base64 < ${shellQuote(request.fileName)} | tr -d '\\n'`,
    `  printf '%s' ${shellQuote(tail)}`,
    `} | curl -sS ${shellQuote(request.url)} \\`,
    "  -H 'Content-Type: application/json' \\",
  ];
  if (request.withKey) {
    lines.push(`  -H "Authorization: Bearer $${KEY_VARIABLE}" \\`);
  }
  lines.push("  --data-binary @-");
  return lines.join("\n");
}

// A JSON value as a Python literal.
function python(value) {
  if (value === null || value === undefined) {
    return "None";
  }
  if (typeof value === "boolean") {
    return value ? "True" : "False";
  }
  if (Array.isArray(value)) {
    return `[${value.map(python).join(", ")}]`;
  }
  if (typeof value === "object") {
    const items = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${python(v)}`);
    return `{${items.join(", ")}}`;
  }
  return JSON.stringify(value); // strings and numbers: JSON's spelling is valid Python
}

export function pythonSnippet(request) {
  const imports = request.withKey
    ? ["import base64", "import json", "import os"]
    : ["import base64", "import json"];
  const fields = Object.entries(request.body).map(
    ([name, value]) => `        ${JSON.stringify(name)}: ${python(value)},`,
  );
  const headers = request.withKey
    ? [`    headers={"Authorization": f"Bearer {os.environ['${KEY_VARIABLE}']}"},`]
    : [];
  return [
    ...imports,
    "",
    "import httpx",
    "",
    `with open(${JSON.stringify(request.fileName)}, "rb") as photo:`,
    "    image = base64.b64encode(photo.read()).decode()",
    "",
    "response = httpx.post(",
    `    ${JSON.stringify(request.url)},`,
    ...headers,
    "    json={",
    `        "image": f"data:${request.mediaType};base64,{image}",`,
    ...fields,
    "    },",
    "    timeout=120,",
    ")",
    "print(json.dumps(response.json(), indent=2))",
  ].join("\n");
}
