// fedshield dashboard: polls /v1/status every two seconds and renders it.
// No dependencies and no network access beyond this coordinator: the chart
// is drawn as inline SVG. Every value shown comes from /v1/status, and the
// chart's points carry their values as data attributes.
"use strict";

const POLL_INTERVAL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";
const SERIES = [
  ["accuracy", "Accuracy"],
  ["roc_auc", "ROC-AUC"],
  ["f1", "F1"],
  ["pr_auc", "PR-AUC"],
];

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    node.setAttribute(name, String(value));
  }
  if (text !== undefined) {
    node.textContent = String(text);
  }
  return node;
}

function svgElement(tag, attributes) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    node.setAttribute(name, String(value));
  }
  return node;
}

function setText(id, text) {
  document.getElementById(id).textContent = String(text);
}

function formatNumber(value, digits) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
}

function formatAgo(unixMs, nowMs) {
  const seconds = Math.max(0, Math.round((nowMs - unixMs) / 1000));
  if (seconds < 120) return seconds + " s ago";
  if (seconds < 7200) return Math.round(seconds / 60) + " min ago";
  return new Date(unixMs).toLocaleString();
}

function fillTable(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
}

function row(cells) {
  const tr = element("tr");
  for (const cell of cells) {
    const td = element("td");
    if (cell instanceof Node) td.appendChild(cell);
    else td.textContent = String(cell);
    tr.appendChild(td);
  }
  return tr;
}

function renderOpenRound(status) {
  const container = document.getElementById("open-round");
  const round = status.open_round;
  if (!round) {
    container.replaceChildren(element("p", { class: "muted", id: "no-open-round" }, "No round is open."));
    return;
  }
  const remainingSecs = Math.max(0, Math.round((round.deadline_unix_ms - status.generated_unix_ms) / 1000));
  const progress = element("progress", {
    id: "round-progress",
    max: Math.max(1, round.selected.length),
    value: round.accepted.length,
  });
  container.replaceChildren(
    element("p", { id: "open-round-id", "data-round": round.round_id },
      "Round " + round.round_id + " trains version " + round.base_version +
      " (attempt " + round.attempt + ", quorum " + round.quorum + ")"),
    element("p", {},
      "Selected " + round.selected.length + " · accepted " + round.accepted.length +
      " · declined " + round.declined.length + " · deadline in " + remainingSecs + " s"),
    progress,
  );
}

function renderChart(status) {
  const chart = document.getElementById("chart");
  const versions = status.versions.filter((version) => version.metrics);
  if (versions.length === 0) {
    chart.replaceChildren(element("p", { class: "muted" }, "No evaluated versions yet (the coordinator has no evaluation set)."));
    document.getElementById("chart-legend").replaceChildren();
    return;
  }
  const width = 960, height = 260, left = 40, right = 16, top = 10, bottom = 28;
  const svg = svgElement("svg", {
    id: "metrics-chart",
    viewBox: "0 0 " + width + " " + height,
    width: "100%",
    role: "img",
    "aria-label": "Global model metrics per version",
  });
  const minVersion = versions[0].version;
  const maxVersion = versions[versions.length - 1].version;
  const x = (version) => maxVersion === minVersion
    ? left + (width - left - right) / 2
    : left + ((version - minVersion) / (maxVersion - minVersion)) * (width - left - right);
  const y = (value) => top + (1 - value) * (height - top - bottom);
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    svg.appendChild(svgElement("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), stroke: "#e3e6ec" }));
    const label = svgElement("text", { x: 4, y: y(tick) + 4 });
    label.textContent = tick.toFixed(2);
    svg.appendChild(label);
  }
  const step = Math.max(1, Math.ceil(versions.length / 12));
  versions.forEach((version, index) => {
    if (index % step !== 0 && index !== versions.length - 1) return;
    const label = svgElement("text", { x: x(version.version) - 6, y: height - 8 });
    label.textContent = "v" + version.version;
    svg.appendChild(label);
  });
  const colors = ["#2f6fdf", "#d9480f", "#2b8a3e", "#862e9c"];
  SERIES.forEach(([key], seriesIndex) => {
    const points = versions.map((version) => [version.version, version.metrics[key]]);
    svg.appendChild(svgElement("polyline", {
      points: points.map(([version, value]) => x(version) + "," + y(value)).join(" "),
      fill: "none",
      stroke: colors[seriesIndex],
      "stroke-width": 2,
      "data-series": key,
    }));
    for (const [version, value] of points) {
      const point = svgElement("circle", {
        cx: x(version), cy: y(value), r: 3.5, fill: colors[seriesIndex],
        class: "point", "data-series": key, "data-version": version, "data-value": value,
      });
      const title = svgElement("title");
      title.textContent = key + " of v" + version + ": " + value.toFixed(4);
      point.appendChild(title);
      svg.appendChild(point);
    }
  });
  chart.replaceChildren(svg);
  document.getElementById("chart-legend").replaceChildren(...SERIES.map(([, name], index) => {
    const item = element("span");
    item.appendChild(element("span", { class: "swatch s" + index }));
    item.appendChild(document.createTextNode(name));
    return item;
  }));
}

function renderPrivacy(status) {
  const latest = status.versions.length > 0 ? status.versions[status.versions.length - 1] : null;
  const epsilon = latest && typeof latest.epsilon === "number"
    ? "Model v" + latest.version + ": record-level ε ≤ " + latest.epsilon.toFixed(3) + " (worst contributor)"
    : "No differential-privacy statement on the latest model card.";
  setText("model-epsilon", epsilon);
  fillTable("privacy", (latest ? latest.privacy : []).map((spend) => {
    const tr = row([spend.participant, formatNumber(spend.reported_epsilon, 3), spend.delta.toExponential(1),
      formatNumber(spend.plan_epsilon, 3), spend.num_rounds_contributed]);
    tr.setAttribute("data-participant", spend.participant);
    tr.setAttribute("data-epsilon", spend.reported_epsilon);
    return tr;
  }));
}

function renderVersions(status) {
  const rows = status.versions.slice().reverse().map((version) => {
    const links = element("span");
    links.appendChild(element("a", { href: version.weights_url, class: "download" }, "weights"));
    links.appendChild(document.createTextNode(" · "));
    links.appendChild(element("a", { href: version.card_url }, "card"));
    const tr = row([
      "v" + version.version,
      version.round_id === null ? "–" : version.round_id,
      new Date(version.created_unix_ms).toLocaleString(),
      version.contributors.length,
      formatNumber(version.metrics && version.metrics.accuracy, 4),
      formatNumber(version.metrics && version.metrics.roc_auc, 4),
      formatNumber(version.epsilon, 3),
      links,
    ]);
    tr.setAttribute("data-version", version.version);
    return tr;
  });
  fillTable("versions", rows);
}

function render(status) {
  setText("current-version", status.current_version);
  setText("rounds-completed", status.num_rounds_completed);
  setText("rounds-abandoned", status.num_rounds_abandoned);
  setText("num-participants", status.participants.length);
  renderOpenRound(status);
  renderChart(status);
  const connectedRows = status.participants.map((participant) => {
    const tr = row([participant.id, formatAgo(participant.last_contact_unix_ms, status.generated_unix_ms),
      (participant.num_dropouts || 0) + (participant.sit_out_rounds_left ? " (sits out " + participant.sit_out_rounds_left + ")" : "")]);
    tr.setAttribute("data-participant", participant.id);
    return tr;
  });
  const revokedRows = (status.revoked_participants || []).map((member) => {
    const tr = row([member.id, member.state + " " + formatAgo(member.revoked_unix_ms, status.generated_unix_ms), ""]);
    tr.setAttribute("data-revoked-participant", member.id);
    tr.setAttribute("title", member.reason);
    tr.className = "revoked";
    return tr;
  });
  fillTable("participants", connectedRows.concat(revokedRows));
  fillTable("dropouts", (status.dropouts || []).map((dropout) => {
    const tr = row([dropout.participant, dropout.num_dropouts, dropout.strikes, dropout.sit_out_rounds_left]);
    tr.setAttribute("data-dropper", dropout.participant);
    tr.setAttribute("data-dropouts", dropout.num_dropouts);
    return tr;
  }));
  renderPrivacy(status);
  renderVersions(status);
  fillTable("rounds", status.recent_rounds.slice().reverse().map((round) => row([
    round.round_id,
    round.outcome + (round.published === null ? "" : " → v" + round.published),
    (round.duration_ms / 1000).toFixed(1) + " s",
    round.contributors.join(", "),
    round.reason,
  ])));
  const connection = document.getElementById("connection");
  connection.className = "muted";
  connection.textContent = "updated " + new Date(status.generated_unix_ms).toLocaleTimeString();
  document.body.setAttribute("data-rendered-version", status.current_version);
}

async function poll() {
  try {
    const response = await fetch("/v1/status", { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      // The session ended (expired, signed out, token revoked): back to the sign-in form.
      window.location.assign("/dashboard");
      return;
    }
    if (!response.ok) {
      throw new Error("status " + response.status + ": " + (await response.text()).trim());
    }
    render(await response.json());
  } catch (error) {
    const connection = document.getElementById("connection");
    connection.className = "stale";
    connection.textContent = "cannot load status: " + error.message;
  }
}

poll();
setInterval(poll, POLL_INTERVAL_MS);
