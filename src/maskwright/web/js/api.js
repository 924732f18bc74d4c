// Thin client of the HTTP contract in docs/api.md: JSON in/out, bearer token, errors as ApiError.

const TOKEN_KEY = "maskwright.token";

export class ApiError extends Error {
  /** @param {number} status HTTP status (0 = network failure) */
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

let onUnauthorized = () => {};
/** Called on any 401 (expired or missing token), e.g. to show the login page. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/**
 * Call the API. `body` is sent as JSON unless it is FormData.
 * @returns {Promise<any>} parsed JSON, a Blob when `opts.blob`, or null for 204.
 */
export async function api(method, path, body = undefined, opts = {}) {
  const headers = {};
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(`/api${path}`, { method, headers, body: payload, signal: opts.signal, keepalive: opts.keepalive });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `Network error: ${err.message}`);
  }
  if (res.status === 401 && !opts.noAuthRedirect) onUnauthorized();
  if (!res.ok) {
    let detail = `${res.status} ${res.statusText}`;
    try {
      const data = await res.json();
      if (typeof data.detail === "string") detail = data.detail;
      else if (Array.isArray(data.detail)) detail = data.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    } catch {
      /* not JSON: keep the status text */
    }
    throw new ApiError(res.status, detail);
  }
  if (opts.blob) return { blob: await res.blob(), filename: filenameOf(res) };
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

function filenameOf(res) {
  const cd = res.headers.get("Content-Disposition") || "";
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
  return m ? decodeURIComponent(m[1]) : null;
}

const blobUrls = new Map();
/** Object URL of an image file (fetched with the token; <img src> cannot send headers). Cached. */
export async function imageUrl(imageId) {
  if (!blobUrls.has(imageId)) {
    blobUrls.set(
      imageId,
      api("GET", `/images/${imageId}/file`, undefined, { blob: true }).then(({ blob }) => URL.createObjectURL(blob)),
    );
  }
  try {
    return await blobUrls.get(imageId);
  } catch (err) {
    blobUrls.delete(imageId);
    throw err;
  }
}

/** Trigger a browser download of a Blob. */
export function downloadBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
