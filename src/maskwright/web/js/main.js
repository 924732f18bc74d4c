// Entry point: hash router (#/login, #/projects, #/projects/{id}, #/images/{id}), top bar with the
// active engine, the save status of the queue, the help overlay, and the test hook window.maskwright.

import { api, getToken, setToken, setUnauthorizedHandler } from "./api.js";
import { Annotator, HELP_KEYS } from "./annotator.js";
import { EventLog } from "./events.js";
import { renderLogin, renderProject, renderProjects } from "./projects.js";
import { SaveQueue } from "./savequeue.js";
import { h, toast } from "./ui.js";

const root = document.getElementById("app");

const app = {
  user: null,
  health: null,
  annotator: null,
  returnTo: null,
  state: { view: "loading", annotator: null },
  events: new EventLog(),
  saveQueue: null,
  conflicts: [],
  rejected: [],
  navigate(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  helpOpen: () => !document.getElementById("help").hidden,
  toggleHelp,
  afterLogin() {
    renderUser();
    app.saveQueue.retryNow();
  },
  /** Refresh window.maskwright.state (a plain snapshot for tests and benchmarks). */
  publish() {
    const a = app.annotator;
    window.maskwright.state = {
      view: app.state.view,
      user: app.user,
      engine: app.health?.engine ?? null,
      engineIsFallback: app.health?.engine_is_fallback ?? null,
      saves: app.saveQueue.status(),
      conflicts: app.conflicts.length,
      rejected: app.rejected.length,
      eventsSent: app.events.sent,
      annotator: a ? a.snapshot() : null,
    };
  },
};

app.saveQueue = new SaveQueue({
  onSaved(localId, ann) {
    app.annotator?.onSaved(localId, ann);
    app.publish();
  },
  onConflict(op, err) {
    app.conflicts.push({ op, detail: err.message });
    showConflict(op, err);
    app.publish();
  },
  onRejected(op, err) {
    app.rejected.push({ op, detail: err.message });
    toast(`The server refused to save an annotation (${err.status}): ${err.message}`, "error", 10000);
    app.publish();
  },
  onChange(status) {
    renderSaveStatus(status);
    if (window.maskwright) app.publish();
  },
});

window.maskwright = { app, state: app.state, metrics: () => app.annotator?.metrics ?? { clicks: [] } };

// ------------------------------------------------------------------ chrome
function renderSaveStatus(status) {
  const el = document.getElementById("save-status");
  if (!el) return;
  el.className = "save-status";
  if (!status.pending) {
    el.textContent = "All changes saved";
    el.classList.add("ok");
    return;
  }
  if (status.lastError) {
    el.classList.add("error");
    el.replaceChildren(
      `${status.pending} unsaved change${status.pending === 1 ? "" : "s"} · retrying in ${Math.ceil(status.retryInMs / 1000)} s (${status.lastError}) `,
      h("button", { class: "btn small", onclick: () => app.saveQueue.retryNow() }, "Retry now"),
    );
    return;
  }
  el.textContent = `Saving ${status.pending}…`;
  el.classList.add("busy");
}
setInterval(() => {
  const s = app.saveQueue.status();
  if (s.pending && s.lastError) renderSaveStatus(s);
}, 1000);

function showConflict(op, err) {
  const bar = document.getElementById("conflict");
  bar.hidden = false;
  bar.replaceChildren(
    h("strong", {}, "Conflict: "),
    `${err.message} Your ${op.kind === "delete" ? "deletion" : "change"} was not applied. `,
    h(
      "button",
      {
        class: "btn small",
        id: "conflict-reload",
        onclick: async () => {
          bar.hidden = true;
          app.conflicts = [];
          if (app.annotator) await app.annotator.loadInstances();
          app.publish();
        },
      },
      "Reload annotations",
    ),
    h("button", { class: "btn small ghost", onclick: () => (bar.hidden = true) }, "Dismiss"),
  );
}

async function renderHealth() {
  try {
    app.health = await api("GET", "/health");
  } catch (err) {
    app.health = null;
    document.getElementById("engine").textContent = "server unreachable";
    return;
  }
  const hl = app.health;
  const engine = document.getElementById("engine");
  engine.textContent = `engine: ${hl.engine}`;
  engine.title = hl.engine_note || "";
  const banner = document.getElementById("fallback-banner");
  banner.hidden = !hl.engine_is_fallback;
  if (hl.engine_is_fallback) {
    banner.replaceChildren(
      h("strong", {}, "Fallback engine: "),
      `masks come from the weight-free "${hl.engine}" engine, not SAM, so expect rougher boundaries. `,
      hl.engine_note ? h("span", { class: "muted" }, hl.engine_note) : null,
    );
  }
}

function renderUser() {
  const el = document.getElementById("user");
  if (!app.user) {
    el.replaceChildren();
    return;
  }
  el.replaceChildren(
    h("span", { class: "muted small" }, `${app.user.username} (${app.user.role})`),
    h(
      "button",
      {
        class: "btn small ghost",
        onclick: () => {
          setToken(null);
          app.user = null;
          renderUser();
          app.navigate("#/login");
        },
      },
      "Sign out",
    ),
  );
}

function toggleHelp(force) {
  const el = document.getElementById("help");
  const show = force ?? el.hidden;
  el.hidden = !show;
  if (show && !el.childElementCount) {
    el.append(
      h(
        "div",
        { class: "card help-card", role: "dialog", "aria-label": "Keyboard shortcuts" },
        h("h2", {}, "Keyboard & mouse"),
        h("table", {}, ...HELP_KEYS.map(([k, v]) => h("tr", {}, h("td", {}, h("kbd", {}, k)), h("td", {}, v)))),
        h("p", { class: "muted small" }, "Every accepted or changed instance is saved at once. Press ? or Esc to close."),
      ),
    );
    el.addEventListener("click", (e) => {
      if (e.target === el) toggleHelp(false);
    });
  }
}

window.addEventListener("keydown", (e) => {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(e.target?.tagName);
  if (typing) return;
  if (e.key === "?") {
    toggleHelp();
    e.preventDefault();
  } else if (e.key === "Escape" && app.helpOpen()) {
    toggleHelp(false);
    e.stopImmediatePropagation();
  }
}, true);
document.getElementById("help-button").addEventListener("click", () => toggleHelp());
// A file dropped outside the drop zone must not make the browser leave the app to show it.
for (const ev of ["dragover", "drop"]) window.addEventListener(ev, (e) => e.preventDefault());
window.addEventListener("online", () => app.saveQueue.retryNow());
window.addEventListener("beforeunload", (e) => {
  app.events.flush(true);
  if (app.saveQueue.ops.length) e.preventDefault(); // still safe in localStorage, but tell the user
});

// ------------------------------------------------------------------ routing
setUnauthorizedHandler(() => {
  setToken(null);
  app.user = null;
  renderUser();
  if (!location.hash.startsWith("#/login")) {
    app.returnTo = location.hash;
    location.hash = "#/login";
  }
});

let routeSeq = 0;
async function route() {
  const seq = ++routeSeq;
  const hash = location.hash || "#/projects";
  if (app.annotator) {
    app.annotator.close();
    app.annotator = null;
  }
  document.body.classList.toggle("annotating", hash.startsWith("#/images/"));
  if (!getToken() && !hash.startsWith("#/login")) {
    app.returnTo = hash;
    location.hash = "#/login";
    return;
  }
  try {
    let m;
    if (hash.startsWith("#/login")) {
      app.state.view = "login";
      renderLogin(root, app);
    } else if ((m = /^#\/projects\/(\d+)/.exec(hash))) {
      app.state.view = "project";
      await renderProject(root, app, Number(m[1]));
    } else if ((m = /^#\/images\/(\d+)/.exec(hash))) {
      app.state.view = "annotator";
      const annotator = new Annotator(app);
      app.annotator = annotator;
      root.replaceChildren(h("div", { class: "center muted" }, "Loading image…"));
      await annotator.open(root, Number(m[1]));
      if (seq !== routeSeq) annotator.close();
    } else {
      app.state.view = "projects";
      await renderProjects(root, app);
    }
  } catch (err) {
    if (seq !== routeSeq || err.status === 401) return;
    root.replaceChildren(
      h("div", { class: "center" }, h("div", { class: "card" }, h("h2", {}, "Could not load this page"), h("p", { class: "error" }, err.message), h("a", { class: "btn", href: "#/projects" }, "Back to projects"))),
    );
  }
  if (seq === routeSeq) app.publish();
}

async function start() {
  renderHealth();
  if (getToken()) {
    try {
      app.user = await api("GET", "/auth/me");
    } catch {
      /* the 401 handler sends us to the login page */
    }
  }
  renderUser();
  window.addEventListener("hashchange", route);
  await route();
  app.saveQueue.retryNow();
}

app.publish();
start();
