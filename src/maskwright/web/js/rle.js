// COCO run-length encoding in the browser: decode the compressed string format of
// pycocotools (`{"size": [H, W], "counts": "<str>"}`) and paint masks into canvases.
// Runs alternate background / foreground, starting with background, in column-major order
// (x-major, like pycocotools' Fortran layout): pixel index i is (x = floor(i / H), y = i % H).

/**
 * Parse the compressed counts string into run lengths.
 * Each run is a sequence of 6-bit chars (offset 48): 5 value bits, bit 0x20 = "more chars follow",
 * bit 0x10 of the last char = sign; from the third run on, values are deltas to the run two before.
 * @param {string} s
 * @returns {Uint32Array} run lengths
 */
export function decodeCounts(s) {
  if (typeof s !== "string") throw new Error(`RLE counts must be a string, got ${typeof s}`);
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      if (p >= s.length) throw new Error("RLE counts string ends inside a run");
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return Uint32Array.from(counts);
}

/**
 * Decode a COCO RLE to a row-major Uint8Array (1 = object) of size H*W.
 * @param {{size: [number, number], counts: string | number[]}} rle
 * @returns {{mask: Uint8Array, height: number, width: number}}
 */
export function decodeRle(rle) {
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? decodeCounts(rle.counts) : Uint32Array.from(rle.counts);
  const mask = new Uint8Array(h * w);
  let i = 0; // column-major index
  for (let r = 0; r < counts.length; r++) {
    const n = counts[r];
    if (r % 2 === 1) {
      // Walk the run one column segment at a time (no division per pixel).
      let x = (i / h) | 0;
      let y = i - x * h;
      let left = n;
      while (left > 0 && x < w) {
        const len = Math.min(left, h - y);
        for (let k = y * w + x, end = (y + len) * w + x; k < end; k += w) mask[k] = 1;
        left -= len;
        x += 1;
        y = 0;
      }
    }
    i += n;
  }
  if (i !== h * w) throw new Error(`RLE covers ${i} pixels, expected ${h}x${w}=${h * w}`);
  return { mask, height: h, width: w };
}

/** Parse "#rrggbb" into [r, g, b]. */
export function hexToRgb(hex) {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex || "");
  return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : [30, 144, 255];
}

/**
 * Paint a decoded mask into an offscreen canvas at image resolution: object pixels get `color`
 * with `alpha` (0..255), the rest is transparent; drawn later with drawImage under the view transform.
 * @returns {{canvas: HTMLCanvasElement | OffscreenCanvas, area: number}}
 */
export function maskCanvas(decoded, color, alpha = 110) {
  const { mask, height, width } = decoded;
  const [r, g, b] = hexToRgb(color);
  const img = new ImageData(width, height);
  const px = new Uint32Array(img.data.buffer);
  // ImageData is RGBA in memory; as little-endian uint32 that is 0xAABBGGRR.
  const value = ((alpha << 24) | (b << 16) | (g << 8) | r) >>> 0;
  let area = 0;
  for (let i = 0; i < mask.length; i++) {
    if (mask[i]) {
      px[i] = value;
      area += 1;
    }
  }
  const canvas = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(width, height) : document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(img, 0, 0);
  return { canvas, area };
}
