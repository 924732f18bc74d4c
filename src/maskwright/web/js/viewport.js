// View transform of the annotator canvas: screen = image * scale + offset (CSS pixels).
// Image coordinates are pixels of the original image, (x, y) with x to the right.

export class Viewport {
  constructor() {
    this.scale = 1;
    this.ox = 0;
    this.oy = 0;
  }

  /** Scale and centre an image of `w` x `h` pixels inside a `cw` x `ch` view, with a margin. */
  fit(w, h, cw, ch, margin = 16) {
    this.scale = Math.max(1e-3, Math.min((cw - 2 * margin) / w, (ch - 2 * margin) / h));
    this.ox = (cw - w * this.scale) / 2;
    this.oy = (ch - h * this.scale) / 2;
  }

  toImage(sx, sy) {
    return [(sx - this.ox) / this.scale, (sy - this.oy) / this.scale];
  }

  toScreen(ix, iy) {
    return [ix * this.scale + this.ox, iy * this.scale + this.oy];
  }

  /** Multiply the scale by `factor` keeping the image point under screen (sx, sy) fixed. */
  zoomAt(sx, sy, factor) {
    const next = Math.min(64, Math.max(0.02, this.scale * factor));
    const [ix, iy] = this.toImage(sx, sy);
    this.scale = next;
    this.ox = sx - ix * next;
    this.oy = sy - iy * next;
  }

  pan(dx, dy) {
    this.ox += dx;
    this.oy += dy;
  }
}
