// Prompt history of the current image: a list of prompt states with a cursor, for undo / redo.
// A state is {points: [{x, y, label}], box: [x0, y0, x1, y1] | null} in image pixels (XY points,
// XYXY box; label 1 = positive, 0 = negative). Each state keeps the server response it produced
// (`response`) and the chosen candidate, so undo and redo redraw at once without a request.

export const EMPTY_PROMPT = Object.freeze({ points: [], box: null });

export function isEmptyPrompt(p) {
  return !p.points.length && !p.box;
}

export class PromptHistory {
  constructor() {
    this.clear();
  }

  clear() {
    this.entries = [{ prompt: EMPTY_PROMPT, response: null, chosen: 0 }];
    this.cursor = 0;
  }

  get current() {
    return this.entries[this.cursor];
  }

  /** Add a new state after the cursor (dropping the redo tail) and return its entry. */
  push(prompt) {
    this.entries = this.entries.slice(0, this.cursor + 1);
    const entry = { prompt, response: null, chosen: 0 };
    this.entries.push(entry);
    this.cursor += 1;
    return entry;
  }

  /** Remove the newest entry without keeping it for redo (a click that turned into a drag). */
  discardLast() {
    if (this.cursor > 0 && this.cursor === this.entries.length - 1) {
      this.entries.pop();
      this.cursor -= 1;
    }
  }

  canUndo() {
    return this.cursor > 0;
  }

  canRedo() {
    return this.cursor < this.entries.length - 1;
  }

  undo() {
    if (this.canUndo()) this.cursor -= 1;
    return this.current;
  }

  redo() {
    if (this.canRedo()) this.cursor += 1;
    return this.current;
  }
}

export function withPoint(prompt, x, y, label) {
  return { points: [...prompt.points, { x, y, label }], box: prompt.box };
}

export function withBox(prompt, box) {
  return { points: prompt.points, box };
}

/** Request body of POST /api/images/{id}/predict for a prompt state. */
export function predictBody(prompt, maskHandle) {
  // One point or a box alone is ambiguous: ask for 3 candidates. Several prompts pin the object
  // down and a single mask is better (segment-anything's recommendation for SamPredictor).
  const n = prompt.points.length + (prompt.box ? 1 : 0);
  return {
    points: prompt.points.map((p) => [p.x, p.y]),
    labels: prompt.points.map((p) => p.label),
    box: prompt.box,
    mask_handle: maskHandle || null,
    multimask: n <= 1,
  };
}
