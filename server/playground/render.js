// Drawing a face analysis: boxes and landmarks over the photo, a card per face, the stamps.
// Everything the server said goes in through textContent or attributes: never parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";
const COLOURS = 6; // face colours, .c0 … .c5 in style.css

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function svgEl(tag, attributes) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, String(value));
  }
  return node;
}

export function percent(p) {
  return `${(p * 100).toFixed(p < 0.1 ? 1 : 0)}%`;
}

export function label(name) {
  return name.replaceAll("_", " ");
}

// Boxes and landmarks in the photo's own pixels: the viewBox is the image's natural size, so
// the drawing scales with the image however wide the screen is.
export function drawOverlay(svg, width, height, faces) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const unit = Math.max(width, height) / 100;
  faces.forEach((face, i) => {
    const group = svgEl("g", { class: `face c${i % COLOURS}`, "data-face": i + 1 });
    const { x, y, w, h } = face.bbox;
    group.append(svgEl("rect", { class: "face-box", x, y, width: w, height: h }));
    group.append(...tag(i + 1, x, y, unit));
    const radius = Math.min(unit * 0.7, Math.max(w / 18, unit * 0.3)); // small faces, small dots
    for (const [name, point] of Object.entries(face.landmarks || {})) {
      if (point && Number.isFinite(point.x) && Number.isFinite(point.y)) {
        const dot = svgEl("circle", { class: "landmark", cx: point.x, cy: point.y, r: radius });
        const title = svgEl("title", {});
        title.textContent = label(name);
        dot.append(title);
        group.append(dot);
      }
    }
    svg.append(group);
  });
}

// The face's number on a tab above its box (inside it when the box touches the top edge).
function tag(number, x, y, unit) {
  const size = unit * 4;
  const top = y >= size ? y - size : y;
  const back = svgEl("rect", { class: "face-tag", x, y: top, width: size, height: size });
  const text = svgEl("text", {
    class: "face-number",
    x: x + size / 2,
    y: top + size * 0.75,
    "font-size": size * 0.7,
    "text-anchor": "middle",
  });
  text.textContent = String(number);
  return [back, text];
}

export function renderCards(list, faces, schema) {
  list.replaceChildren(
    ...faces.map((face, i) => {
      const card = el("li", `face-card c${i % COLOURS}`);
      card.id = `face-${i + 1}`;
      const heading = el("h3");
      heading.append(el("span", "swatch", String(i + 1)), ` Face ${i + 1}`);
      const { x, y, w, h } = face.bbox;
      const where = `Box at ${x}, ${y}, ${w} × ${h} px · detector score ${face.score.toFixed(2)}`;
      const answers = el("dl", "answers");
      for (const [name, answer] of Object.entries(face.attributes)) {
        const term = el("dt", "", label(name));
        const description = schema.properties?.[name]?.description;
        if (description) {
          term.title = description;
        }
        if (answer.abstained) {
          const badge = el("span", "badge", "abstained");
          badge.title = "Below min_confidence: the model's own pick is among the alternatives.";
          term.append(" ", badge);
        }
        answers.append(term, renderAnswer(answer));
      }
      card.append(heading, el("p", "hint", where), answers);
      return card;
    }),
  );
}

// A plain value; with confidences, a bar per value the model weighed, its answer first.
function renderAnswer(answer) {
  const cell = el("dd");
  if (typeof answer === "string") {
    cell.append(el("span", "value", answer));
    return cell;
  }
  const bars = el("ul", "bars");
  for (const row of [answer, ...answer.alternatives]) {
    const chosen = row === answer;
    const item = el("li", chosen ? "bar chosen" : "bar");
    const meter = el("meter");
    meter.min = 0;
    meter.max = 1;
    meter.value = row.confidence;
    meter.setAttribute("aria-label", `${row.value}: ${percent(row.confidence)}`);
    const name = el("span", chosen ? "bar-label value" : "bar-label", row.value);
    item.append(name, meter, el("span", "pct", percent(row.confidence)));
    bars.append(item);
  }
  if (answer.abstained) {
    cell.classList.add("abstained");
  }
  cell.append(bars);
  return cell;
}

export function renderStamps(list, result) {
  const { data, ms, requestId } = result;
  const usage = data.usage || {};
  const versions = data.versions || {};
  const rows = [
    ["Round trip", `${Math.round(ms)} ms`],
    [
      "Tokens",
      `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion = ${usage.total_tokens}`,
    ],
    ["Model", versions.model],
    ["Adapter", versions.adapter],
    ["Prompt version", versions.prompt],
    ["Schema version", versions.schema],
    ["Preprocessing", versions.preprocessing],
    ["Request id", requestId],
  ];
  list.replaceChildren();
  for (const [name, value] of rows) {
    if (value !== null && value !== undefined) {
      list.append(el("dt", "", name), el("dd", "", String(value)));
    }
  }
  list.hidden = false;
}
