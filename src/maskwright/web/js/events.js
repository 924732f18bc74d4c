// Interaction log: every prompt and choice is queued here and sent in batches to
// POST /api/images/{id}/events (every 2 s, at 25 events, and when the page is hidden).

import { api } from "./api.js";

const FLUSH_MS = 2000;
const BATCH = 25;

export class EventLog {
  constructor() {
    this.pending = new Map(); // imageId -> [event]
    this.sent = 0;
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") this.flush(true);
    });
  }

  /**
   * Record one event. `t` is milliseconds since the epoch; extra fields (x, y, label, candidate,
   * score, mask_change, data) as in docs/api.md.
   */
  log(imageId, kind, fields = {}) {
    if (imageId == null) return;
    const list = this.pending.get(imageId) || [];
    list.push({ kind, t: Date.now() / 1000, ...fields });
    this.pending.set(imageId, list);
    if (list.length >= BATCH) this.flush();
  }

  async flush(keepalive = false) {
    for (const [imageId, list] of this.pending) {
      if (!list.length) continue;
      this.pending.set(imageId, []);
      try {
        const res = await api("POST", `/images/${imageId}/events`, list, { keepalive });
        this.sent += res?.stored ?? list.length;
      } catch (err) {
        if (err.status >= 400 && err.status < 500 && err.status !== 401 && err.status !== 429) {
          console.warn(`interaction log rejected (${err.status}): ${err.message}`);
          continue;
        }
        // Put them back in front, to go with the next flush.
        this.pending.set(imageId, [...list, ...(this.pending.get(imageId) || [])]);
      }
    }
  }
}
