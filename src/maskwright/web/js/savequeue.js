// Every accepted or changed instance is saved at once through this queue. Operations run one at a
// time in order (a patch never overtakes the create of its instance); a failed save is retried with
// exponential backoff and the queue lives in localStorage, so a reload or a crash does not lose work.
// A 409 (someone else changed the annotation) is handed to `onConflict`; any other 4xx is reported
// through `onRejected`. Nothing is ever dropped silently.

import { api } from "./api.js";

const STORAGE_KEY = "maskwright.saveQueue.v1";
const MAX_DELAY_MS = 30000;

export class SaveQueue {
  /**
   * @param {object} hooks
   * @param {(localId: string, annotation: object|null, op: object) => void} hooks.onSaved
   *   after a create/patch (annotation) or delete (null) succeeded.
   * @param {(op: object, err: Error) => void} hooks.onConflict a 409 / vanished annotation.
   * @param {(op: object, err: Error) => void} hooks.onRejected any other 4xx.
   * @param {(status: object) => void} hooks.onChange queue status for the UI.
   */
  constructor(hooks = {}) {
    this.hooks = { onSaved() {}, onConflict() {}, onRejected() {}, onChange() {}, ...hooks };
    this.ops = [];
    this.known = {}; // localId -> {id, version} of instances the server knows
    this.attempts = 0;
    this.retryAt = 0;
    this.lastError = null;
    this.busy = false;
    this.timer = null;
    this.load();
  }

  load() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
      if (saved) {
        this.ops = saved.ops || [];
        this.known = saved.known || {};
        // Sent before the page went away: the server may have stored them without us hearing back.
        for (const op of this.ops) if (op.sent) op.uncertain = true;
      }
    } catch {
      this.ops = [];
    }
  }

  persist() {
    // Keep only identities still needed by pending operations.
    const needed = new Set(this.ops.map((op) => op.localId));
    const known = {};
    for (const k of needed) if (this.known[k]) known[k] = this.known[k];
    const ops = this.ops.map(({ inFlight, ...rest }) => rest);
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ ops, known }));
  }

  /** Remember the server identity of an instance loaded from the server. */
  track(localId, id, version) {
    this.known[localId] = { id, version };
  }

  status() {
    return {
      pending: this.ops.length,
      retryInMs: this.retryAt ? Math.max(0, this.retryAt - Date.now()) : 0,
      lastError: this.lastError,
      attempts: this.attempts,
    };
  }

  notify() {
    this.hooks.onChange(this.status());
  }

  /** Pending creates for one image (shown by the annotator after a reload, before they reach the server). */
  pendingCreates(imageId) {
    return this.ops.filter((op) => op.kind === "create" && op.imageId === imageId);
  }

  create(localId, imageId, body) {
    this.push({ kind: "create", localId, imageId, body });
  }

  patch(localId, imageId, body) {
    // Merge into a pending (not in-flight) patch or create of the same instance.
    const prev = this.ops.findLast((op) => op.localId === localId && !op.inFlight);
    if (prev && (prev.kind === "patch" || prev.kind === "create") && this.ops.indexOf(prev) === this.ops.length - 1) {
      Object.assign(prev.body, body);
      this.persist();
      this.notify();
      this.pump();
      return;
    }
    this.push({ kind: "patch", localId, imageId, body });
  }

  remove(localId, imageId) {
    // Never sent: forget its pending operations instead of creating then deleting it.
    const create = this.ops.find((op) => op.localId === localId && op.kind === "create");
    if (create && !create.inFlight) {
      this.ops = this.ops.filter((op) => op.localId !== localId);
      this.persist();
      this.notify();
      return;
    }
    this.push({ kind: "delete", localId, imageId, body: {} });
  }

  push(op) {
    op.seq = Date.now() + Math.random();
    this.ops.push(op);
    this.persist();
    this.notify();
    this.pump();
  }

  /** Send the head of the queue now (also called on `online` and after login). */
  retryNow() {
    this.retryAt = 0;
    clearTimeout(this.timer);
    this.timer = null;
    this.pump();
  }

  async pump() {
    if (this.busy || !this.ops.length || Date.now() < this.retryAt) return;
    this.busy = true;
    const op = this.ops[0];
    op.inFlight = true;
    op.sent = true;
    this.persist();
    try {
      const result = await this.send(op);
      this.ops.shift();
      this.attempts = 0;
      this.lastError = null;
      if (result) this.known[op.localId] = { id: result.id, version: result.version };
      this.persist();
      this.hooks.onSaved(op.localId, result, op);
    } catch (err) {
      op.inFlight = false;
      const status = err.status ?? 0;
      if (status === 409 || (status === 404 && op.kind === "patch")) {
        this.ops.shift();
        this.persist();
        this.hooks.onConflict(op, err);
      } else if (status === 404 && op.kind === "delete") {
        this.ops.shift(); // already gone: the wish is fulfilled
        this.persist();
        this.hooks.onSaved(op.localId, null, op);
      } else if (status >= 400 && status < 500 && status !== 401 && status !== 408 && status !== 429) {
        this.ops.shift();
        this.persist();
        this.hooks.onRejected(op, err);
      } else {
        // Network failure, 5xx, 401 (until logged in again): keep it and retry with backoff.
        if (status === 0 || status >= 500) op.uncertain = true; // it may have been stored all the same
        this.attempts += 1;
        this.lastError = err.message;
        const delay = Math.min(MAX_DELAY_MS, 1000 * 2 ** (this.attempts - 1));
        this.retryAt = Date.now() + delay;
        clearTimeout(this.timer);
        this.timer = setTimeout(() => {
          this.retryAt = 0;
          this.pump();
        }, delay);
      }
    } finally {
      this.busy = false;
      this.notify();
    }
    if (this.ops.length && !this.retryAt) this.pump();
  }

  async send(op) {
    const who = this.known[op.localId];
    if (op.kind === "create") {
      if (op.uncertain) {
        // No idempotency key in the API: look for the same mask before creating it a second time.
        const existing = await api("GET", `/images/${op.imageId}/annotations`);
        const same = existing.find((a) => a.rle?.counts === op.body.rle.counts && a.label_id === op.body.label_id);
        if (same) return same;
      }
      return api("POST", `/images/${op.imageId}/annotations`, op.body);
    }
    if (!who) throw Object.assign(new Error("The annotation was never saved on the server"), { status: 404 });
    if (op.kind === "patch") return api("PATCH", `/annotations/${who.id}`, { ...op.body, version: who.version });
    await api("DELETE", `/annotations/${who.id}?version=${who.version}`);
    return null;
  }
}
