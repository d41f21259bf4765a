// The rollout viewer: recent trajectories of a run, from GET /runs/{name}/trajectories. No dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function headers() {
  const token = $("token").value || sessionStorage.getItem("mgpo-token") || "";
  if ($("token").value) sessionStorage.setItem("mgpo-token", $("token").value);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function getJSON(url) {
  const response = await fetch(url, { headers: headers() });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(`${response.status} ${body.detail || response.statusText}`);
  }
  return response.json();
}

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function imageUrl(run, hash, region, maxSide) {
  const q = new URLSearchParams({ max_side: maxSide });
  if (region) q.set("region", region.map((v) => Math.round(v)).join(","));
  return `/runs/${encodeURIComponent(run)}/images/${hash}?${q}`;
}

function rect(box, cls) {
  const [x1, y1, x2, y2] = box;
  return el("svg:rect", { class: cls, x: x1, y: y1, width: x2 - x1, height: y2 - y1 });
}

// One image with boxes over it, drawn in its own pixels.
function framed(run, image, boxes, maxSide) {
  const [w, h] = image.size;
  const overlay = el("svg:svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none" });
  for (const [box, cls] of boxes) overlay.append(rect(box, cls));
  return el("div", { class: "frame" },
    el("img", { class: "original", src: imageUrl(run, image.hash, null, maxSide), alt: "image" }), overlay);
}

// Multi-image grounding boxes are normalised 0-1 to their image: scale them to its pixels.
const scaled = (box, [w, h]) => [box[0] * w, box[1] * h, box[2] * w, box[3] * h];

// Every image of a multi-image grounding prompt, numbered, with the true box on the target image and the
// answer's box on the image the answer named.
function groundingFrames(run, t) {
  const frames = el("div", { class: "frames" });
  t.images.forEach((image, i) => {
    const boxes = [];
    if (t.target_box && String(i + 1) === t.answer) boxes.push([scaled(t.target_box, image.size), "box-true"]);
    if (t.answer_box && t.answer_image === i + 1) boxes.push([scaled(t.answer_box, image.size), "box-pred"]);
    frames.append(el("figure", {}, framed(run, image, boxes, 512), el("figcaption", { text: `image ${i + 1}` })));
  });
  return frames;
}

function card(run, t) {
  const grounding = t.kind === "multi_image_grounding";
  const first = t.images[0];
  const boxes = t.target_box && !grounding ? [[t.target_box, "box-true"]] : [];
  for (const c of t.crops) if (c.image === first.hash) boxes.push([c.region, "box-pred"]);
  const frame = grounding ? groundingFrames(run, t) : framed(run, first, boxes, 1024);

  const crops = el("div", { class: "crops" });
  if (!grounding && t.crops.length === 0) crops.append(el("div", { class: "none", text: "no crop (no valid box)" }));
  for (const c of t.crops) {
    crops.append(el("img", { class: "crop", src: imageUrl(run, c.image, c.region, 480), alt: "crop" }));
  }

  const choices = el("ol", { type: "A" });
  for (const choice of t.choices) choices.append(el("li", { text: choice }));
  const turns = el("div", { class: "turns" });
  t.text.forEach((reply, i) => turns.append(el("div", { text: `turn ${i + 1}` }), el("pre", { text: reply })));
  const badges = el("div", { class: "badges" },
    el("span", { class: t.reward >= 1 ? "good" : "bad", text: `reward ${t.reward.toFixed(2)}` }),
    grounding
      ? el("span", { class: t.answer_iou >= 0.5 ? "good" : "bad",
                     text: `IoU ${(t.answer_iou ?? 0).toFixed(2)}, named image ${t.answer_image ?? "none"}` })
      : el("span", { class: t.valid_grounding ? "good" : "bad",
                     text: t.valid_grounding ? "valid grounding" : "invalid grounding" }),
    el("span", { text: grounding ? `target image ${t.answer}` : `answer ${t.answer}` }),
    el("span", { text: `v${t.policy_version}` }),
    el("span", { text: `${t.turns} turn(s), ${t.finish_reason}` }),
    el("span", { text: t.actor }));
  const text = el("div", { class: "text" }, el("h3", { text: t.question }), choices, badges, turns);
  return el("article", { class: `traj ${t.valid_grounding ? "valid" : "invalid"}${grounding ? " grounding" : ""}`,
                         "data-group": t.group, "data-sample": t.sample }, frame, crops, text);
}

async function loadRuns() {
  const runs = await getJSON("/runs");
  const select = $("run");
  const wanted = new URLSearchParams(location.search).get("run") || select.value;
  select.replaceChildren(...runs.map((r) => el("option", { value: r.name, text: `${r.name} (${r.status}, v${r.version})` })));
  if (runs.some((r) => r.name === wanted)) select.value = wanted;
}

// Each refresh's number: a slower, older one (the page's first load, a filter changed since) that answers
// after a newer one must not put its stale list back.
let latest = 0;

async function refresh() {
  const ticket = ++latest;
  const run = $("run").value;
  const list = $("list");
  if (!run) {
    list.replaceChildren(el("div", { class: "empty", text: "no runs yet: POST /runs to start one" }));
    return;
  }
  const q = new URLSearchParams({ limit: $("limit").value || "24" });
  if ($("valid").value) q.set("valid", $("valid").value);
  if ($("min-reward").value !== "") q.set("min_reward", $("min-reward").value);
  if ($("max-reward").value !== "") q.set("max_reward", $("max-reward").value);
  const items = await getJSON(`/runs/${encodeURIComponent(run)}/trajectories?${q}`);
  if (ticket !== latest) return;
  list.replaceChildren(...(items.length ? items.map((t) => card(run, t))
    : [el("div", { class: "empty", text: "no trajectories match" })]));
  $("status").textContent = `${items.length} shown, ${new Date().toLocaleTimeString()}`;
  await refreshDead(run);
}

// Prompts that never completed (dead letters): hidden while there are none.
async function refreshDead(run) {
  const letters = await getJSON(`/runs/${encodeURIComponent(run)}/dead?limit=20`);
  $("dead").hidden = letters.length === 0;
  $("dead").querySelector("summary").textContent = `${letters.length} dead-lettered prompt(s): never completed`;
  $("dead-list").replaceChildren(...letters.map((d) =>
    el("li", {}, el("b", { text: d.id }), ` (${d.kind}): ${d.reason}`)));
}

async function update() {
  try {
    await loadRuns();
    await refresh();
  } catch (err) {
    $("status").textContent = `error: ${err.message}`;
  }
}

for (const id of ["run", "valid", "min-reward", "max-reward", "limit", "token"]) $(id).addEventListener("change", update);
setInterval(() => { if ($("live").checked) update(); }, 5000);
update();
