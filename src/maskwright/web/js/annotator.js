// The annotator: one image on a canvas, prompts in, candidate masks out, instances saved at once.
//
// Mouse: left click = positive point, right click or Shift+click = negative point, left drag = box,
// wheel = zoom around the cursor, drag with Space or the middle button = pan, Alt+click = select
// the instance under the cursor. Keys are listed in the help overlay (HELP_KEYS).
//
// Coordinates: points and boxes are pixels of the original image (XY, XYXY); the canvas draws the
// image with the Viewport transform (screen = image * scale + offset). Polygon vertices from the
// server sit at pixel centres, so they are drawn shifted by half a pixel.

import { api, downloadBlob, imageUrl } from "./api.js";
import { PromptHistory, isEmptyPrompt, predictBody, withBox, withPoint } from "./prompt.js";
import { decodeRle, hexToRgb, maskCanvas } from "./rle.js";
import { STATUS_NAMES, h, isTyping, toast } from "./ui.js";
import { Viewport } from "./viewport.js";

export const HELP_KEYS = [
  ["Left click", "Positive point (this is the object)"],
  ["Right click / Shift+click", "Negative point (not this)"],
  ["Left drag", "Box around the object"],
  ["1 / 2 / 3", "Choose candidate mask"],
  ["Enter", "Accept the mask as an instance with the selected label"],
  ["Esc", "Clear the prompt"],
  ["Ctrl+Z / Ctrl+Shift+Z", "Undo / redo prompt"],
  ["Shift+1…9", "Select label"],
  ["Alt+click", "Select the instance under the cursor"],
  ["Delete", "Delete the selected instance"],
  ["H", "Hide / show the selected instance"],
  ["A", "Segment everything (automatic proposals)"],
  ["N / P", "Next / previous image"],
  ["D", "Mark the image done"],
  ["Wheel", "Zoom around the cursor"],
  ["Space+drag / middle drag", "Pan"],
  ["F", "Fit image to window"],
  ["?", "This help"],
];

const DRAG_PX = 5; // a left press that moves further than this (screen px) is a box, not a click
const EMBED_AHEAD = 2; // images after the current one whose embeddings are requested in advance
const PROPOSAL_COLORS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6"];

let localCounter = 0;
function newLocalId() {
  localCounter += 1;
  return `l-${Date.now().toString(36)}-${localCounter}-${Math.random().toString(36).slice(2, 7)}`;
}

/** Path2D of polygon parts (exterior + holes, flat XY lists at pixel centres). */
function polygonPath(parts) {
  const path = new Path2D();
  for (const part of parts || []) {
    for (const ring of [part.exterior, ...(part.holes || [])]) {
      if (!ring || ring.length < 4) continue;
      path.moveTo(ring[0] + 0.5, ring[1] + 0.5);
      for (let i = 2; i < ring.length; i += 2) path.lineTo(ring[i] + 0.5, ring[i + 1] + 0.5);
      path.closePath();
    }
  }
  return path;
}

export class Annotator {
  /**
   * @param {object} app shared services: {saveQueue, events, labelsOf(project), state, navigate}
   */
  constructor(app) {
    this.app = app;
    this.history = new PromptHistory();
    this.view = new Viewport();
    this.instances = [];
    this.proposals = null;
    this.selectedInstance = null;
    this.hoverProposal = null;
    this.requestSeq = 0;
    this.frameQueued = false;
    this.afterDraw = [];
    this.spaceDown = false;
    this.drag = null;
    this.cursor = null;
    this.metrics = { clicks: [] };
    this.onKey = this.onKey.bind(this);
    this.onKeyUp = this.onKeyUp.bind(this);
    this.onResize = () => this.resize();
  }

  // ---------------------------------------------------------------- lifecycle
  async open(root, imageId) {
    this.root = root;
    const image = await api("GET", `/images/${imageId}`);
    const [project, siblings] = await Promise.all([
      api("GET", `/projects/${image.project_id}`),
      this.loadSiblings(image.project_id),
    ]);
    this.image = image;
    this.project = project;
    this.siblings = siblings;
    this.labels = project.labels;
    const remembered = Number(localStorage.getItem(`maskwright.label.${project.id}`));
    this.labelId = this.labels.some((l) => l.id === remembered) ? remembered : this.labels[0]?.id ?? null;
    this.build();
    this.embedAhead();
    const url = await imageUrl(image.id);
    this.img = new Image();
    this.img.src = url;
    await this.img.decode();
    this.resize();
    this.fit();
    window.addEventListener("keydown", this.onKey);
    window.addEventListener("keyup", this.onKeyUp);
    window.addEventListener("resize", this.onResize);
    await this.loadInstances();
    this.ready = true;
    this.app.state.annotator = this;
    this.exposeState();
    this.requestRender();
  }

  close() {
    this.closed = true;
    clearTimeout(this.embedTimer);
    window.removeEventListener("keydown", this.onKey);
    window.removeEventListener("keyup", this.onKeyUp);
    window.removeEventListener("resize", this.onResize);
    if (this.app.state.annotator === this) this.app.state.annotator = null;
  }

  async loadSiblings(projectId) {
    const all = [];
    for (let offset = 0; ; offset += 200) {
      const page = await api("GET", `/projects/${projectId}/images?offset=${offset}&limit=200`);
      all.push(...page.items);
      if (!page.items.length || all.length >= page.total) break;
    }
    return all;
  }

  embedAhead() {
    const i = this.siblings.findIndex((s) => s.id === this.image.id);
    const ids = [this.image.id, ...this.siblings.slice(i + 1, i + 1 + EMBED_AHEAD).map((s) => s.id)];
    for (const id of ids) {
      if (id === this.image.id && this.image.embedding_status === "ready") continue;
      api("POST", `/images/${id}/embed`)
        .then((img) => {
          if (img && img.id === this.image.id) {
            this.image.embedding_status = img.embedding_status;
            this.renderHeader();
            this.pollEmbedding();
          }
        })
        .catch(() => {}); // best effort: predict embeds on demand anyway
    }
  }

  /** Follow the embedding of the open image until it is ready (shown in the header). */
  pollEmbedding() {
    clearTimeout(this.embedTimer);
    if (this.closed || !["queued", "computing"].includes(this.image.embedding_status)) return;
    this.embedTimer = setTimeout(async () => {
      try {
        const img = await api("GET", `/images/${this.image.id}`);
        if (this.closed) return;
        this.image.embedding_status = img.embedding_status;
        this.renderHeader();
      } catch {
        return;
      }
      this.pollEmbedding();
    }, 1500);
  }

  async loadInstances() {
    const anns = await api("GET", `/images/${this.image.id}/annotations`);
    const queue = this.app.saveQueue;
    const pendingDeletes = new Set(queue.ops.filter((op) => op.kind === "delete").map((op) => op.localId));
    const idToLocal = new Map(Object.entries(queue.known).map(([local, who]) => [who.id, local]));
    this.instances = [];
    for (const ann of anns) {
      const localId = idToLocal.get(ann.id) || `s-${ann.id}`;
      if (pendingDeletes.has(localId)) continue;
      queue.track(localId, ann.id, ann.version);
      this.instances.push({ ...ann, localId, hidden: false });
    }
    // Accepted here before a reload but not on the server yet: still shown, still being saved.
    for (const op of queue.pendingCreates(this.image.id)) {
      if (this.instances.some((inst) => inst.localId === op.localId)) continue;
      this.instances.push({ ...op.body, localId: op.localId, id: null, version: null, hidden: false });
    }
    for (const op of queue.ops) {
      const inst = this.instances.find((x) => x.localId === op.localId);
      if (inst && op.kind === "patch" && op.body.label_id != null) inst.label_id = op.body.label_id;
    }
    this.invalidateInstances();
    this.renderInstances();
    this.requestRender();
  }

  // ---------------------------------------------------------------- layout
  build() {
    this.canvas = h("canvas", { class: "stage-canvas", "aria-label": "Image to annotate" });
    this.ctx = this.canvas.getContext("2d");
    this.stage = h("div", { class: "stage" }, this.canvas, h("div", { class: "stage-hint" }));
    this.headerEl = h("div", { class: "annotator-bar" });
    this.labelsEl = h("div", { class: "label-list" });
    this.candidatesEl = h("div", { class: "candidate-list" });
    this.instancesEl = h("div", { class: "instance-list" });
    this.proposalsEl = h("div", { class: "proposal-panel" });
    this.side = h(
      "aside",
      { class: "side" },
      h("section", {}, h("h3", {}, "Labels"), this.labelsEl),
      h("section", {}, h("h3", {}, "Candidates"), this.candidatesEl),
      this.proposalsEl,
      h("section", { class: "grow" }, h("h3", {}, "Instances"), this.instancesEl),
    );
    this.root.replaceChildren(h("div", { class: "annotator" }, this.headerEl, h("div", { class: "work" }, this.stage, this.side)));
    this.bindPointer();
    this.renderHeader();
    this.renderLabels();
    this.renderCandidates();
    this.renderInstances();
    this.renderProposals();
  }

  renderHeader() {
    const i = this.siblings.findIndex((s) => s.id === this.image.id);
    const exportSelect = h(
      "select",
      { class: "export-format", title: "Export format" },
      ...["coco", "coco-polygons", "yolo", "png-instance", "png-semantic"].map((f) => h("option", { value: f }, f)),
    );
    this.headerEl.replaceChildren(
      h("a", { class: "btn ghost", href: `#/projects/${this.project.id}`, title: "Back to the image grid" }, "← ", this.project.name),
      h("button", { class: "btn", onclick: () => this.go(-1), disabled: i <= 0, title: "Previous image (P)" }, "‹ Prev"),
      h("span", { class: "image-name", title: this.image.file_name }, this.image.file_name),
      h("span", { class: "muted" }, `${i + 1} / ${this.siblings.length}`),
      h("button", { class: "btn", onclick: () => this.go(1), disabled: i >= this.siblings.length - 1, title: "Next image (N)" }, "Next ›"),
      h("span", { class: `pill status-${this.image.status}` }, STATUS_NAMES[this.image.status] || this.image.status),
      h("span", { class: "muted small", title: "Embedding of this image on the server" }, `embedding: ${this.image.embedding_status}`),
      h("span", { class: "spacer" }),
      h("button", { class: "btn", onclick: () => this.fit(), title: "Fit to window (F)" }, "Fit"),
      h("button", { class: "btn", id: "segment-everything", onclick: () => this.segmentEverything(), title: "Automatic proposals (A)" }, "Segment everything"),
      h("button", { class: "btn", onclick: () => this.markDone(), title: "Mark done (D)" }, this.image.status === "done" ? "Reopen" : "Mark done"),
      exportSelect,
      h("button", { class: "btn", id: "export", onclick: () => exportProject(this.project, exportSelect.value) }, "Export"),
      h("button", { class: "btn ghost", onclick: () => this.app.toggleHelp(), title: "Keyboard shortcuts (?)" }, "?"),
    );
  }

  renderLabels() {
    this.labelsEl.replaceChildren(
      ...this.labels.map((label, k) =>
        h(
          "button",
          {
            class: `label-chip${label.id === this.labelId ? " active" : ""}`,
            dataset: { labelId: label.id },
            onclick: () => this.selectLabel(label.id),
            title: k < 9 ? `Shift+${k + 1}` : "",
          },
          h("span", { class: "swatch", style: { background: label.color } }),
          label.name,
          k < 9 ? h("kbd", {}, `⇧${k + 1}`) : null,
        ),
      ),
    );
    if (!this.labels.length) this.labelsEl.append(h("p", { class: "muted small" }, "This project has no labels yet."));
  }

  renderCandidates() {
    const entry = this.history.current;
    const res = entry.response;
    const hint = this.stage?.querySelector(".stage-hint");
    if (hint) {
      hint.textContent = isEmptyPrompt(entry.prompt)
        ? "Click the object · right click what is not · drag a box"
        : "Enter to accept · Esc to clear · 1/2/3 to switch candidates";
    }
    if (!res) {
      this.candidatesEl.replaceChildren(
        h("p", { class: "muted small" }, entry.pending ? "Segmenting…" : entry.error ? `Error: ${entry.error}` : "No prompt yet."),
      );
      return;
    }
    this.candidatesEl.replaceChildren(
      ...res.candidates.map((c, k) =>
        h(
          "button",
          { class: `candidate${k === entry.chosen ? " active" : ""}`, onclick: () => this.choose(k), title: `Key ${k + 1}` },
          h("kbd", {}, String(k + 1)),
          h("span", { class: "score" }, `score ${c.score.toFixed(2)}`),
          h("span", { class: "muted small" }, `${c.area.toLocaleString()} px`),
        ),
      ),
      h("div", { class: "muted small" }, `${res.engine} · decode ${res.decode_ms.toFixed(0)} ms`),
    );
  }

  renderInstances() {
    if (!this.instancesEl) return;
    if (!this.instances.length) {
      this.instancesEl.replaceChildren(h("p", { class: "muted small" }, "No instances yet. Accept a mask with Enter."));
      return;
    }
    this.instancesEl.replaceChildren(
      ...this.instances.map((inst, k) => {
        const label = this.labelById(inst.label_id);
        const select = h(
          "select",
          { class: "relabel", title: "Label", onchange: (e) => this.relabel(inst, Number(e.target.value)), onclick: (e) => e.stopPropagation() },
          ...this.labels.map((l) => h("option", { value: l.id, selected: l.id === inst.label_id }, l.name)),
        );
        return h(
          "div",
          {
            class: `instance${inst.localId === this.selectedInstance ? " selected" : ""}${inst.hidden ? " hidden-inst" : ""}`,
            dataset: { localId: inst.localId },
            onclick: () => this.selectInstance(inst.localId),
          },
          h("span", { class: "swatch", style: { background: label?.color || "#888" } }),
          h("span", { class: "inst-name" }, `#${k + 1}`),
          select,
          h("span", { class: "muted small", title: inst.id ? `saved, version ${inst.version}` : "not saved yet" }, inst.id ? "" : "●"),
          h("button", { class: "icon", title: inst.hidden ? "Show" : "Hide", onclick: (e) => (e.stopPropagation(), this.toggleHidden(inst)) }, inst.hidden ? "◌" : "◉"),
          h("button", { class: "icon danger", title: "Delete", onclick: (e) => (e.stopPropagation(), this.deleteInstance(inst)) }, "✕"),
        );
      }),
    );
  }

  renderProposals() {
    if (!this.proposalsEl) return;
    if (!this.proposals) {
      this.proposalsEl.replaceChildren();
      this.proposalsEl.hidden = true;
      return;
    }
    this.proposalsEl.hidden = false;
    const open = this.proposals.filter((p) => !p.done);
    this.proposalsEl.replaceChildren(
      h("h3", {}, `Proposals (${open.length})`),
      h(
        "div",
        { class: "row" },
        h("button", { class: "btn primary small", id: "accept-all", onclick: () => this.acceptAllProposals(), disabled: !open.length }, "Accept all"),
        h("button", { class: "btn small", onclick: () => this.rejectAllProposals(), disabled: !open.length }, "Reject all"),
      ),
      h(
        "div",
        { class: "proposal-list" },
        ...open.map((p) =>
          h(
            "div",
            {
              class: `proposal${p === this.hoverProposal ? " selected" : ""}`,
              onmouseenter: () => ((this.hoverProposal = p), this.requestRender()),
              onmouseleave: () => ((this.hoverProposal = null), this.requestRender()),
            },
            h("span", { class: "swatch", style: { background: p.color } }),
            h("span", { class: "small" }, `IoU ${p.predicted_iou.toFixed(2)} · ${p.area.toLocaleString()} px`),
            h("span", { class: "spacer" }),
            h("button", { class: "icon ok", title: "Accept", onclick: () => this.acceptProposal(p) }, "✓"),
            h("button", { class: "icon danger", title: "Reject", onclick: () => this.rejectProposal(p) }, "✕"),
          ),
        ),
      ),
    );
  }

  // ---------------------------------------------------------------- drawing
  resize() {
    const r = this.stage.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.cssW = Math.max(1, r.width);
    this.cssH = Math.max(1, r.height);
    this.canvas.width = Math.round(this.cssW * dpr);
    this.canvas.height = Math.round(this.cssH * dpr);
    this.canvas.style.width = `${this.cssW}px`;
    this.canvas.style.height = `${this.cssH}px`;
    this.dpr = dpr;
    this.requestRender();
  }

  fit() {
    if (!this.img) return;
    this.view.fit(this.img.naturalWidth, this.img.naturalHeight, this.cssW, this.cssH);
    this.requestRender();
  }

  /** Draw on the next animation frame; `then` runs right after that frame is drawn. */
  requestRender(then) {
    if (then) this.afterDraw.push(then);
    if (this.frameQueued) return;
    this.frameQueued = true;
    requestAnimationFrame(() => {
      this.frameQueued = false;
      this.draw();
      this.exposeState();
      const callbacks = this.afterDraw;
      this.afterDraw = [];
      for (const fn of callbacks) fn();
    });
  }

  draw() {
    const ctx = this.ctx;
    if (!ctx || !this.img) return;
    const { scale, ox, oy } = this.view;
    const dpr = this.dpr;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.setTransform(scale * dpr, 0, 0, scale * dpr, ox * dpr, oy * dpr);
    ctx.imageSmoothingEnabled = scale < 1;
    ctx.drawImage(this.img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    const px = 1 / scale; // one screen pixel in image units

    // Accepted instances: fills composited into one layer (one drawImage per frame however many there are).
    this.instanceLayer = this.instanceLayer || this.buildInstanceLayer();
    ctx.drawImage(this.instanceLayer.canvas, 0, 0);
    for (const inst of this.instances) {
      if (inst.hidden) continue;
      const color = this.labelById(inst.label_id)?.color || "#888888";
      const selected = inst.localId === this.selectedInstance;
      this.strokePolygons(inst, color, (selected ? 3 : 1.5) * px, selected);
    }
    if (this.proposals) {
      // Often 100+ proposals: their fills are composited once into one layer, not drawn one by one.
      this.proposalLayer = this.proposalLayer || this.buildProposalLayer();
      ctx.drawImage(this.proposalLayer, 0, 0);
      for (const p of this.proposals) {
        if (!p.done) this.strokePolygons(p, p.color, px, false);
      }
      const hot = this.hoverProposal;
      if (hot && !hot.done) {
        this.drawMask(hot, hot.color, 160);
        this.strokePolygons(hot, "#ffffff", 3 * px, false);
      }
    }
    const entry = this.history.current;
    const cand = entry.response?.candidates[entry.chosen];
    if (cand) {
      const color = this.labelById(this.labelId)?.color || "#1e90ff";
      // The live candidate: label colour, with a white and black dashed edge that accepted instances never have.
      this.drawMask(cand, color, 130);
      this.strokePolygons(cand, "#ffffff", 2.5 * px, false);
      this.strokePolygons(cand, "#0f172a", 1.2 * px, true);
    }
    const prompt = entry.prompt;
    if (prompt.box) this.strokeBox(prompt.box, "#ffd400", px);
    if (this.drag?.box) this.strokeBox(this.drag.box, "#ffd400", px, [6 * px, 4 * px]);
    for (const p of prompt.points) {
      ctx.beginPath();
      ctx.arc(p.x + 0.5, p.y + 0.5, 6 * px, 0, 2 * Math.PI);
      ctx.fillStyle = p.label ? "#22c55e" : "#ef4444";
      ctx.fill();
      ctx.lineWidth = 2 * px;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
      ctx.beginPath();
      ctx.lineWidth = 1.8 * px;
      ctx.moveTo(p.x + 0.5 - 3 * px, p.y + 0.5);
      ctx.lineTo(p.x + 0.5 + 3 * px, p.y + 0.5);
      if (p.label) {
        ctx.moveTo(p.x + 0.5, p.y + 0.5 - 3 * px);
        ctx.lineTo(p.x + 0.5, p.y + 0.5 + 3 * px);
      }
      ctx.stroke();
    }
  }

  /** Fill from the RLE (decoded once, cached on the object as an offscreen canvas). */
  drawMask(obj, color, alpha) {
    const key = `${color}/${alpha}`;
    if (!obj._fill || obj._fillKey !== key) {
      obj._decoded = obj._decoded || decodeRle(obj.rle);
      obj._fill = maskCanvas(obj._decoded, color, alpha).canvas;
      obj._fillKey = key;
    }
    this.ctx.drawImage(obj._fill, 0, 0);
  }

  /** Layer of instance fills: {canvas, data (ImageData)}; new instances are painted in, not rebuilt. */
  buildInstanceLayer() {
    const w = this.img.naturalWidth;
    const hgt = this.img.naturalHeight;
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = hgt;
    const layer = { canvas, ctx: canvas.getContext("2d"), data: new ImageData(w, hgt) };
    for (const inst of this.instances) this.paintInstance(layer, inst, false);
    layer.ctx.putImageData(layer.data, 0, 0);
    return layer;
  }

  paintInstance(layer, inst, flush = true) {
    if (inst.hidden) return;
    inst._decoded = inst._decoded || decodeRle(inst.rle);
    const [r, g, b] = hexToRgb(this.labelById(inst.label_id)?.color || "#888888");
    const value = ((90 << 24) | (b << 16) | (g << 8) | r) >>> 0; // little-endian RGBA
    const px = new Uint32Array(layer.data.data.buffer);
    const mask = inst._decoded.mask;
    for (let i = 0; i < mask.length; i++) if (mask[i]) px[i] = value;
    if (flush) {
      const [x, y, bw, bh] = inst.bbox || [0, 0, layer.canvas.width, layer.canvas.height];
      layer.ctx.putImageData(layer.data, 0, 0, Math.floor(x), Math.floor(y), Math.ceil(bw) + 1, Math.ceil(bh) + 1);
    }
  }

  /** Instances changed in a way that needs a full repaint of their layer (hide, relabel, delete, reload). */
  invalidateInstances() {
    this.instanceLayer = null;
  }

  /** One image-sized canvas with every open proposal filled (largest first, so small ones stay visible). */
  buildProposalLayer() {
    const w = this.img.naturalWidth;
    const hgt = this.img.naturalHeight;
    const data = new ImageData(w, hgt);
    const px = new Uint32Array(data.data.buffer);
    const open = this.proposals.filter((p) => !p.done).sort((a, b) => b.area - a.area);
    for (const p of open) {
      p._decoded = p._decoded || decodeRle(p.rle);
      const [r, g, b] = hexToRgb(p.color);
      const value = ((80 << 24) | (b << 16) | (g << 8) | r) >>> 0; // little-endian RGBA
      const mask = p._decoded.mask;
      for (let i = 0; i < mask.length; i++) if (mask[i]) px[i] = value;
    }
    const layer = document.createElement("canvas");
    layer.width = w;
    layer.height = hgt;
    layer.getContext("2d").putImageData(data, 0, 0);
    return layer;
  }

  strokePolygons(obj, color, width, dashed) {
    if (!obj.polygons) return;
    obj._path = obj._path || polygonPath(obj.polygons);
    const ctx = this.ctx;
    ctx.lineWidth = width;
    ctx.strokeStyle = color;
    ctx.lineJoin = "round";
    ctx.setLineDash(dashed ? [4 * width, 2 * width] : []);
    ctx.stroke(obj._path);
    ctx.setLineDash([]);
  }

  strokeBox(box, color, px, dash = []) {
    const ctx = this.ctx;
    const [x0, y0, x1, y1] = box;
    ctx.setLineDash(dash);
    ctx.lineWidth = 3 * px;
    ctx.strokeStyle = "rgba(0,0,0,0.6)";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.lineWidth = 1.5 * px;
    ctx.strokeStyle = color;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
  }

  // ---------------------------------------------------------------- pointer
  bindPointer() {
    const c = this.canvas;
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = c.getBoundingClientRect();
      this.view.zoomAt(e.clientX - r.left, e.clientY - r.top, Math.exp(-e.deltaY * 0.0015));
      this.requestRender();
    }, { passive: false });
    c.addEventListener("mousedown", (e) => {
      if (e.button === 1) e.preventDefault(); // no autoscroll: the middle button pans
    });
    c.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    c.addEventListener("pointermove", (e) => this.onPointerMove(e));
    c.addEventListener("pointerup", (e) => this.onPointerUp(e));
    c.addEventListener("pointercancel", () => (this.drag = null));
  }

  eventToImage(e) {
    const r = this.canvas.getBoundingClientRect();
    const [ix, iy] = this.view.toImage(e.clientX - r.left, e.clientY - r.top);
    return [ix, iy];
  }

  /** Integer pixel inside the image, or null when (ix, iy) is outside it. */
  pixelAt(ix, iy) {
    const w = this.img.naturalWidth;
    const hgt = this.img.naturalHeight;
    if (ix < 0 || iy < 0 || ix >= w || iy >= hgt) return null;
    return [Math.min(w - 1, Math.floor(ix)), Math.min(hgt - 1, Math.floor(iy))];
  }

  onPointerDown(e) {
    if (!this.ready) return;
    this.canvas.setPointerCapture(e.pointerId);
    if (e.button === 1 || (e.button === 0 && this.spaceDown)) {
      e.preventDefault();
      this.drag = { kind: "pan", x: e.clientX, y: e.clientY };
      this.canvas.classList.add("panning");
      return;
    }
    const [ix, iy] = this.eventToImage(e);
    if (e.button === 0 && e.altKey) {
      this.selectInstanceAt(ix, iy);
      return;
    }
    const pix = this.pixelAt(ix, iy);
    if (e.button !== 0 && e.button !== 2) return;
    const negative = e.button === 2 || e.shiftKey;
    // Send the click at once, on press: if the press turns into a drag it becomes a box and the
    // response of this click is dropped as stale.
    let entry = null;
    if (pix) entry = this.pushPrompt(withPoint(this.history.current.prompt, pix[0], pix[1], negative ? 0 : 1), e.timeStamp, negative ? "negative" : "positive");
    this.drag = { kind: negative ? "negclick" : "click", sx: e.clientX, sy: e.clientY, ix, iy, entry, box: null };
  }

  onPointerMove(e) {
    const d = this.drag;
    if (!d) return;
    if (d.kind === "pan") {
      this.view.pan(e.clientX - d.x, e.clientY - d.y);
      d.x = e.clientX;
      d.y = e.clientY;
      this.requestRender();
      return;
    }
    if (d.kind !== "click") return;
    if (!d.box && Math.hypot(e.clientX - d.sx, e.clientY - d.sy) < DRAG_PX) return;
    if (!d.box && d.entry) {
      // The press was the start of a box: take its point back.
      if (this.history.current === d.entry) this.history.discardLast();
      d.entry.stale = true;
      d.entry = null;
      this.afterPromptChange();
    }
    const [ix, iy] = this.eventToImage(e);
    d.box = this.clampBox([d.ix, d.iy, ix, iy]);
    this.requestRender();
  }

  onPointerUp(e) {
    const d = this.drag;
    this.drag = null;
    this.canvas.classList.remove("panning");
    if (!d || d.kind === "pan") return;
    if (d.box) {
      const [x0, y0, x1, y1] = d.box;
      if (x1 - x0 >= 2 && y1 - y0 >= 2) {
        this.pushPrompt(withBox(this.history.current.prompt, d.box), e.timeStamp, "box");
      } else this.requestRender();
    }
  }

  clampBox([ax, ay, bx, by]) {
    const w = this.img.naturalWidth - 1;
    const hgt = this.img.naturalHeight - 1;
    const cx = (v) => Math.round(Math.min(w, Math.max(0, v)));
    const cy = (v) => Math.round(Math.min(hgt, Math.max(0, v)));
    return [cx(Math.min(ax, bx)), cy(Math.min(ay, by)), cx(Math.max(ax, bx)), cy(Math.max(ay, by))];
  }

  // ---------------------------------------------------------------- prompts
  /** Add a prompt state, send it to the server now, and log it. */
  pushPrompt(prompt, t0, kind) {
    const prev = this.history.current;
    const prevCand = prev.response && !isEmptyPrompt(prev.prompt) ? `${prev.response.handle}:${prev.chosen}` : null;
    const entry = this.history.push(prompt);
    entry.t0 = t0;
    this.predict(entry, prevCand);
    const last = kind === "box" ? null : prompt.points[prompt.points.length - 1];
    if (kind === "box") this.log("box", { data: { box: prompt.box } });
    else this.log("click", { x: last.x, y: last.y, label: last.label });
    this.afterPromptChange();
    return entry;
  }

  async predict(entry, maskHandle) {
    const seq = ++this.requestSeq;
    entry.pending = true;
    entry.error = null;
    entry.seq = seq;
    const tSend = performance.now();
    let res;
    try {
      res = await api("POST", `/images/${this.image.id}/predict`, predictBody(entry.prompt, maskHandle));
    } catch (err) {
      entry.pending = false;
      // The server forgot the previous mask (restart, LRU): the prompt alone still works.
      if (maskHandle && err.status >= 400 && err.status < 500 && /mask_handle/.test(err.message)) {
        return this.predict(entry, null);
      }
      if (entry.stale || entry !== this.history.current) return;
      entry.error = err.message;
      toast(`Segmentation failed: ${err.message}`, "error");
      this.renderCandidates();
      return;
    }
    const tResponse = performance.now();
    entry.pending = false;
    entry.response = res;
    entry.chosen = bestCandidate(res.candidates);
    // A newer prompt (or undo) superseded this one: keep the response for redo, draw nothing.
    if (entry.stale || entry !== this.history.current) return;
    const cand = res.candidates[entry.chosen];
    if (cand) {
      cand._decoded = decodeRle(cand.rle);
    }
    const tDecoded = performance.now();
    this.renderCandidates();
    this.requestRender(() => {
      if (entry.t0 == null || entry.measured) return;
      entry.measured = true;
      const now = performance.now();
      this.metrics.clicks.push({
        total_ms: now - entry.t0,
        roundtrip_ms: tResponse - tSend,
        decode_ms: res.decode_ms,
        rle_decode_ms: tDecoded - tResponse,
        send_delay_ms: tSend - entry.t0,
        seq,
      });
      this.exposeState();
    });
    this.exposeState();
  }

  afterPromptChange() {
    // Decoded masks and their canvases are image-sized: keep them for the current prompt only.
    for (const entry of this.history.entries) {
      if (entry === this.history.current || !entry.response) continue;
      for (const c of entry.response.candidates) {
        c._decoded = null;
        c._fill = null;
      }
    }
    this.renderCandidates();
    this.requestRender();
    this.exposeState();
  }

  choose(k) {
    const entry = this.history.current;
    if (!entry.response || k < 0 || k >= entry.response.candidates.length) return;
    entry.chosen = k;
    const c = entry.response.candidates[k];
    this.log("choose_candidate", { candidate: k, score: c.score });
    this.afterPromptChange();
  }

  clearPrompt() {
    if (isEmptyPrompt(this.history.current.prompt) && this.history.entries.length === 1) return;
    this.history.clear();
    this.log("clear");
    this.afterPromptChange();
  }

  undo() {
    if (!this.history.canUndo()) return;
    const entry = this.history.undo();
    this.log("undo");
    this.refreshEntry(entry);
  }

  redo() {
    if (!this.history.canRedo()) return;
    const entry = this.history.redo();
    this.log("redo");
    this.refreshEntry(entry);
  }

  /** Show a history entry again; ask the server only if its answer never came. */
  refreshEntry(entry) {
    entry.stale = false;
    if (!entry.response && !entry.pending && !isEmptyPrompt(entry.prompt)) this.predict(entry, null);
    this.afterPromptChange();
  }

  // ---------------------------------------------------------------- instances
  accept() {
    const entry = this.history.current;
    const cand = entry.response?.candidates[entry.chosen];
    if (!cand) {
      toast(entry.pending ? "Still segmenting… try again in a moment" : "Nothing to accept: click the object first");
      return;
    }
    if (this.labelId == null) {
      toast("Add a label to the project first", "error");
      return;
    }
    const source = entry.prompt.points.length ? "click" : "box";
    this.addInstance({ label_id: this.labelId, rle: cand.rle, polygons: cand.polygons, bbox: cand.bbox, area: cand.area, source, score: cand.score }, cand);
    this.log("accept", { label: this.labelId, candidate: entry.chosen, score: cand.score, mask_change: cand.area });
    this.history.clear();
    this.afterPromptChange();
  }

  addInstance(fields, drawCache) {
    const inst = { ...fields, localId: newLocalId(), id: null, version: null, hidden: false };
    if (drawCache?._decoded) inst._decoded = drawCache._decoded;
    this.instances.push(inst);
    if (this.instanceLayer) this.paintInstance(this.instanceLayer, inst);
    const body = { label_id: fields.label_id, rle: fields.rle, source: fields.source, polygons: fields.polygons };
    if (fields.score != null) body.score = fields.score;
    this.app.saveQueue.create(inst.localId, this.image.id, body);
    if (this.image.status === "new") {
      this.image.status = "in_progress"; // at once, so a burst of accepts sends one PATCH
      this.setStatus("in_progress");
    }
    this.renderInstances();
    this.requestRender();
    this.exposeState();
    return inst;
  }

  /** A save finished: the queue reports the server's annotation for a local instance. */
  onSaved(localId, ann) {
    const inst = this.instances.find((x) => x.localId === localId);
    if (!inst) return;
    if (ann) {
      inst.id = ann.id;
      inst.version = ann.version;
      if (ann.polygons) {
        inst.polygons = ann.polygons;
        inst._path = null;
      }
      inst.bbox = ann.bbox;
      inst.area = ann.area;
    }
    this.renderInstances();
    this.requestRender();
    this.exposeState();
  }

  relabel(inst, labelId) {
    if (inst.label_id === labelId) return;
    inst.label_id = labelId;
    this.invalidateInstances();
    if (inst.id != null) this.app.saveQueue.track(inst.localId, inst.id, inst.version);
    this.app.saveQueue.patch(inst.localId, this.image.id, { label_id: labelId });
    this.log("relabel", { label: labelId, data: { annotation: inst.id } });
    this.renderInstances();
    this.requestRender();
    this.exposeState();
  }

  deleteInstance(inst) {
    this.instances = this.instances.filter((x) => x !== inst);
    this.invalidateInstances();
    if (this.selectedInstance === inst.localId) this.selectedInstance = null;
    if (inst.id != null) this.app.saveQueue.track(inst.localId, inst.id, inst.version);
    this.app.saveQueue.remove(inst.localId, this.image.id);
    this.log("delete", { label: inst.label_id, data: { annotation: inst.id } });
    this.renderInstances();
    this.requestRender();
    this.exposeState();
  }

  toggleHidden(inst) {
    inst.hidden = !inst.hidden;
    this.invalidateInstances();
    this.renderInstances();
    this.requestRender();
    this.exposeState();
  }

  selectInstance(localId) {
    this.selectedInstance = this.selectedInstance === localId ? null : localId;
    this.renderInstances();
    this.requestRender();
    this.exposeState();
  }

  selectInstanceAt(ix, iy) {
    const pix = this.pixelAt(ix, iy);
    if (!pix) return;
    for (let k = this.instances.length - 1; k >= 0; k--) {
      const inst = this.instances[k];
      if (inst.hidden) continue;
      inst._decoded = inst._decoded || decodeRle(inst.rle);
      if (inst._decoded.mask[pix[1] * inst._decoded.width + pix[0]]) {
        this.selectedInstance = inst.localId;
        this.renderInstances();
        this.requestRender();
        return;
      }
    }
  }

  selectLabel(labelId) {
    this.labelId = labelId;
    localStorage.setItem(`maskwright.label.${this.project.id}`, String(labelId));
    this.renderLabels();
    this.requestRender();
    this.exposeState();
  }

  labelById(id) {
    return this.labels.find((l) => l.id === id);
  }

  // ---------------------------------------------------------------- proposals
  async segmentEverything() {
    const btn = document.getElementById("segment-everything");
    if (btn) {
      btn.disabled = true;
      btn.textContent = "Segmenting everything…";
    }
    try {
      const res = await api("POST", `/projects/${this.project.id}/automask`, { image_id: this.image.id });
      this.proposals = res.proposals.map((p, k) => ({ ...p, color: PROPOSAL_COLORS[k % PROPOSAL_COLORS.length], done: false }));
      this.proposalLayer = null;
      if (!this.proposals.length) this.proposals = null;
      this.log("automask", { data: { proposals: this.proposals.length } });
      toast(`${this.proposals.length} proposals: accept or reject them on the right`);
    } catch (err) {
      toast(`Segment everything failed: ${err.message}`, "error");
    } finally {
      if (btn) {
        btn.disabled = false;
        btn.textContent = "Segment everything";
      }
    }
    this.renderProposals();
    this.requestRender();
    this.exposeState();
  }

  acceptProposal(p, batch = false) {
    if (this.labelId == null) return toast("Add a label to the project first", "error");
    p.done = true;
    this.addInstance({ label_id: this.labelId, rle: p.rle, polygons: p.polygons, bbox: p.bbox, area: p.area, source: "auto", score: p.predicted_iou }, p);
    this.log("accept_proposal", { label: this.labelId, score: p.predicted_iou });
    if (!batch) this.finishProposal(p);
  }

  rejectProposal(p, batch = false) {
    p.done = true;
    this.log("reject_proposal", { score: p.predicted_iou });
    if (!batch) this.finishProposal(p);
  }

  acceptAllProposals() {
    if (this.labelId == null) return toast("Add a label to the project first", "error");
    for (const p of this.proposals.filter((q) => !q.done)) this.acceptProposal(p, true);
    this.finishProposal(null);
  }

  rejectAllProposals() {
    for (const p of this.proposals.filter((q) => !q.done)) this.rejectProposal(p, true);
    this.finishProposal(null);
  }

  finishProposal(p) {
    if (this.hoverProposal === p || this.hoverProposal?.done) this.hoverProposal = null;
    this.proposalLayer = null;
    if (this.proposals.every((q) => q.done)) this.proposals = null;
    this.renderProposals();
    this.requestRender();
    this.exposeState();
  }

  // ---------------------------------------------------------------- image
  go(step) {
    const i = this.siblings.findIndex((s) => s.id === this.image.id);
    const next = this.siblings[i + step];
    if (next) this.app.navigate(`#/images/${next.id}`);
  }

  async setStatus(status) {
    try {
      this.image = { ...this.image, ...(await api("PATCH", `/images/${this.image.id}`, { status })) };
      this.renderHeader();
    } catch (err) {
      toast(`Could not set the status: ${err.message}`, "error");
    }
  }

  markDone() {
    this.setStatus(this.image.status === "done" ? "in_progress" : "done");
  }

  // ---------------------------------------------------------------- keys
  onKey(e) {
    if (!this.ready || this.closed || isTyping(e) || this.app.helpOpen()) return;
    const ctrl = e.ctrlKey || e.metaKey;
    if (ctrl && (e.key === "z" || e.key === "Z")) {
      e.preventDefault();
      if (e.shiftKey) this.redo();
      else this.undo();
      return;
    }
    if (ctrl && (e.key === "y" || e.key === "Y")) {
      e.preventDefault();
      this.redo();
      return;
    }
    if (ctrl || e.altKey) return;
    if (e.shiftKey && /^Digit[1-9]$/.test(e.code)) {
      const label = this.labels[Number(e.code.slice(5)) - 1];
      if (label) this.selectLabel(label.id);
      e.preventDefault();
      return;
    }
    switch (e.key) {
      case "1":
      case "2":
      case "3":
        this.choose(Number(e.key) - 1);
        break;
      case "Enter":
        this.accept();
        break;
      case "Escape":
        this.clearPrompt();
        break;
      case " ":
        if (document.activeElement instanceof HTMLButtonElement) document.activeElement.blur();
        this.spaceDown = true;
        this.canvas.classList.add("pan-ready");
        break;
      case "n":
      case "N":
        this.go(1);
        break;
      case "p":
      case "P":
        this.go(-1);
        break;
      case "f":
      case "F":
        this.fit();
        break;
      case "a":
      case "A":
        this.segmentEverything();
        break;
      case "d":
      case "D":
        this.markDone();
        break;
      case "h":
      case "H": {
        const inst = this.instances.find((x) => x.localId === this.selectedInstance);
        if (inst) this.toggleHidden(inst);
        break;
      }
      case "Delete":
      case "Backspace": {
        const inst = this.instances.find((x) => x.localId === this.selectedInstance);
        if (inst) this.deleteInstance(inst);
        break;
      }
      default:
        return;
    }
    e.preventDefault();
  }

  onKeyUp(e) {
    if (e.key === " ") {
      this.spaceDown = false;
      this.canvas?.classList.remove("pan-ready");
    }
  }

  // ---------------------------------------------------------------- state hook
  log(kind, fields = {}) {
    this.app.events.log(this.image.id, kind, fields);
  }

  /** A plain snapshot for tests and benchmarks: window.maskwright.state.annotator. */
  snapshot() {
    const entry = this.history.current;
    const cand = entry.response?.candidates[entry.chosen] || null;
    return {
      ready: !!this.ready,
      imageId: this.image.id,
      projectId: this.project.id,
      width: this.img?.naturalWidth,
      height: this.img?.naturalHeight,
      labelId: this.labelId,
      prompt: entry.prompt,
      pending: !!entry.pending,
      candidates: entry.response ? entry.response.candidates.map((c) => ({ index: c.index, score: c.score, area: c.area, bbox: c.bbox })) : [],
      chosen: entry.chosen,
      canUndo: this.history.canUndo(),
      canRedo: this.history.canRedo(),
      selectedInstance: this.selectedInstance,
      instances: this.instances.map((x) => ({ localId: x.localId, id: x.id, version: x.version, label_id: x.label_id, area: x.area, source: x.source, hidden: x.hidden })),
      proposals: this.proposals ? this.proposals.filter((p) => !p.done).length : 0,
      view: { scale: this.view.scale, ox: this.view.ox, oy: this.view.oy },
      hasMask: !!cand,
    };
  }

  /** Whether image pixel (x, y) is inside the current candidate mask (decoded from its RLE). */
  maskCovers(x, y) {
    const entry = this.history.current;
    const cand = entry.response?.candidates[entry.chosen];
    if (!cand) return false;
    cand._decoded = cand._decoded || decodeRle(cand.rle);
    return cand._decoded.mask[Math.floor(y) * cand._decoded.width + Math.floor(x)] === 1;
  }

  /** COCO RLE of the current candidate mask (null without one), for tests. */
  currentRle() {
    const entry = this.history.current;
    return entry.response?.candidates[entry.chosen]?.rle ?? null;
  }

  /** Number of object pixels of the current candidate as decoded here in JS (tests compare with pycocotools). */
  decodedArea() {
    const entry = this.history.current;
    const cand = entry.response?.candidates[entry.chosen];
    if (!cand) return 0;
    cand._decoded = cand._decoded || decodeRle(cand.rle);
    return cand._decoded.mask.reduce((a, v) => a + v, 0);
  }

  /** Screen (client) coordinates of image pixel (x, y), for driving the mouse in tests. */
  clientPoint(x, y) {
    const r = this.canvas.getBoundingClientRect();
    const [sx, sy] = this.view.toScreen(x + 0.5, y + 0.5);
    return [r.left + sx, r.top + sy];
  }

  exposeState() {
    this.app.publish();
  }
}

function bestCandidate(candidates) {
  let best = 0;
  candidates.forEach((c, k) => {
    if (c.score > candidates[best].score) best = k;
  });
  return best;
}

/** Download a project export in one of the formats of docs/api.md. */
export async function exportProject(project, format = "coco") {
  try {
    toast(`Preparing ${format} export…`);
    const { blob, filename } = await api("GET", `/projects/${project.id}/export?format=${encodeURIComponent(format)}`, undefined, { blob: true });
    const ext = format.startsWith("coco") ? "json" : "zip";
    downloadBlob(blob, filename || `${project.name}-${format}.${ext}`);
    toast("Export downloaded", "ok");
  } catch (err) {
    toast(`Export failed: ${err.message}`, "error");
  }
}
