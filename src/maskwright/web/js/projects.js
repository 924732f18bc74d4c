// Login, project list and creation (labels with colours), and a project's image grid with upload.

import { api, imageUrl, setToken } from "./api.js";
import { exportProject } from "./annotator.js";
import { STATUS_NAMES, h, toast } from "./ui.js";

const DEFAULT_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];

export function renderLogin(root, app) {
  const user = h("input", { name: "username", autocomplete: "username", required: true, value: "admin" });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const error = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    {
      class: "card login",
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = "";
        try {
          const res = await api("POST", "/auth/login", { username: user.value, password: pass.value }, { noAuthRedirect: true });
          setToken(res.token);
          app.user = res.user;
          app.afterLogin();
          app.navigate(app.returnTo && !app.returnTo.startsWith("#/login") ? app.returnTo : "#/projects");
        } catch (err) {
          error.textContent = err.status === 401 ? "Wrong username or password." : err.message;
        }
      },
    },
    h("h1", {}, "Sign in to maskwright"),
    h("label", {}, "Username", user),
    h("label", {}, "Password", pass),
    error,
    h("button", { class: "btn primary", type: "submit" }, "Sign in"),
  );
  root.replaceChildren(h("div", { class: "center" }, form));
  pass.focus();
}

export async function renderProjects(root, app) {
  const projects = await api("GET", "/projects");
  const list = h(
    "div",
    { class: "project-list" },
    ...projects.map((p) =>
      h(
        "a",
        { class: "card project-card", href: `#/projects/${p.id}` },
        h("h3", {}, p.name),
        h("div", { class: "muted small" }, `${p.image_count} image${p.image_count === 1 ? "" : "s"}`),
        h("div", { class: "chips" }, ...p.labels.map((l) => h("span", { class: "chip" }, h("span", { class: "swatch", style: { background: l.color } }), l.name))),
      ),
    ),
  );
  if (!projects.length) list.append(h("p", { class: "muted" }, "No projects yet: create the first one."));
  root.replaceChildren(
    h("div", { class: "page" }, h("div", { class: "page-head" }, h("h1", {}, "Projects")), h("div", { class: "two-col" }, list, newProjectForm(app))),
  );
}

function newProjectForm(app) {
  const name = h("input", { name: "project-name", required: true, placeholder: "e.g. Street scenes" });
  const rows = h("div", { class: "label-rows" });
  const addRow = (labelName = "") => {
    const color = DEFAULT_COLORS[rows.children.length % DEFAULT_COLORS.length];
    const row = h(
      "div",
      { class: "label-row" },
      h("input", { type: "color", value: color, class: "label-color", title: "Label colour" }),
      h("input", { class: "label-name", placeholder: "label name", value: labelName }),
      h("button", { type: "button", class: "icon danger", title: "Remove label", onclick: () => row.remove() }, "✕"),
    );
    rows.append(row);
  };
  addRow();
  const error = h("p", { class: "error", role: "alert" });
  return h(
    "form",
    {
      class: "card new-project",
      onsubmit: async (e) => {
        e.preventDefault();
        const labels = [...rows.querySelectorAll(".label-row")]
          .map((r) => ({ name: r.querySelector(".label-name").value.trim(), color: r.querySelector(".label-color").value }))
          .filter((l) => l.name);
        try {
          const p = await api("POST", "/projects", { name: name.value.trim(), labels });
          toast(`Project "${p.name}" created`, "ok");
          app.navigate(`#/projects/${p.id}`);
        } catch (err) {
          error.textContent = err.message;
        }
      },
    },
    h("h2", {}, "New project"),
    h("label", {}, "Name", name),
    h("div", { class: "muted small" }, "Labels"),
    rows,
    h("button", { type: "button", class: "btn small", id: "add-label", onclick: () => addRow() }, "+ Add label"),
    error,
    h("button", { class: "btn primary", type: "submit", id: "create-project" }, "Create project"),
  );
}

export async function renderProject(root, app, projectId) {
  const project = await api("GET", `/projects/${projectId}`);
  const grid = h("div", { class: "image-grid" });
  const filter = h(
    "select",
    { class: "status-filter", onchange: () => loadImages(true) },
    h("option", { value: "" }, "All statuses"),
    ...Object.entries(STATUS_NAMES).map(([k, v]) => h("option", { value: k }, v)),
  );
  const more = h("button", { class: "btn", hidden: true, onclick: () => loadImages(false) }, "Load more");
  const count = h("span", { class: "muted" });
  let offset = 0;
  const loadImages = async (reset) => {
    if (reset) {
      offset = 0;
      grid.replaceChildren();
    }
    const q = filter.value ? `&status=${filter.value}` : "";
    const result = await api("GET", `/projects/${projectId}/images?offset=${offset}&limit=60${q}`);
    offset += result.items.length;
    for (const img of result.items) grid.append(imageTile(img));
    count.textContent = `${result.total} image${result.total === 1 ? "" : "s"}`;
    more.hidden = offset >= result.total;
    if (!result.total) grid.append(h("p", { class: "muted empty" }, "No images yet: drop photos here or choose files."));
  };

  const picker = h("input", { type: "file", multiple: true, accept: "image/*", id: "file-picker", hidden: true, onchange: (e) => upload(e.target.files) });
  const dropzone = h(
    "div",
    { class: "dropzone", id: "dropzone" },
    h("strong", {}, "Drop images here"),
    h("span", { class: "muted" }, " or "),
    h("button", { class: "btn small", onclick: () => picker.click() }, "choose files"),
    picker,
  );
  const progress = h("span", { class: "muted small" });
  const upload = async (files) => {
    const list = [...files].filter((f) => f.type.startsWith("image/") || /\.(jpe?g|png|bmp|tiff?|webp)$/i.test(f.name));
    if (!list.length) return toast("No image files in the selection", "error");
    // Batches of 8 keep each request small; a bad file fails only its own batch.
    let done = 0;
    for (let i = 0; i < list.length; i += 8) {
      const form = new FormData();
      for (const f of list.slice(i, i + 8)) form.append("files", f, f.name);
      progress.textContent = `Uploading ${done}/${list.length}…`;
      try {
        const created = await api("POST", `/projects/${projectId}/images`, form);
        done += created.length;
      } catch (err) {
        toast(`Upload failed: ${err.message}`, "error", 6000);
      }
    }
    progress.textContent = done ? `Uploaded ${done} image${done === 1 ? "" : "s"}` : "";
    picker.value = "";
    await loadImages(true);
  };
  const exportSelect = h(
    "select",
    { class: "export-format" },
    ...["coco", "coco-polygons", "yolo", "png-instance", "png-semantic"].map((f) => h("option", { value: f }, f)),
  );
  const page = h("div", { class: "page" });
  // Listeners live on this page's element, so they go away with it (no duplicates on the next visit).
  for (const ev of ["dragenter", "dragover"]) {
    page.addEventListener(ev, (e) => {
      e.preventDefault();
      dropzone.classList.add("over");
    });
  }
  page.addEventListener("dragleave", (e) => {
    if (e.target === dropzone || !page.contains(e.relatedTarget)) dropzone.classList.remove("over");
  });
  page.addEventListener("drop", (e) => {
    e.preventDefault();
    dropzone.classList.remove("over");
    if (e.dataTransfer?.files?.length) upload(e.dataTransfer.files);
  });

  page.append(
      h(
        "div",
        { class: "page-head" },
        h("a", { href: "#/projects", class: "btn ghost" }, "← Projects"),
        h("h1", {}, project.name),
        h("div", { class: "chips" }, ...project.labels.map((l) => h("span", { class: "chip" }, h("span", { class: "swatch", style: { background: l.color } }), l.name))),
        addLabelForm(project, () => renderProject(root, app, projectId)),
        h("span", { class: "spacer" }),
        exportSelect,
        h("button", { class: "btn", id: "export", onclick: () => exportProject(project, exportSelect.value) }, "Export"),
      ),
      h("div", { class: "toolbar" }, dropzone, progress, h("span", { class: "spacer" }), count, filter),
      grid,
      more,
  );
  root.replaceChildren(page);
  await loadImages(true);
  app.publish();
}

/** A "+ Label" button that opens an inline name + colour form (POST /api/projects/{id}/labels). */
function addLabelForm(project, onAdded) {
  const name = h("input", { class: "new-label-name", placeholder: "label name", required: true, size: 12 });
  const color = h("input", { type: "color", value: DEFAULT_COLORS[project.labels.length % DEFAULT_COLORS.length] });
  const form = h(
    "form",
    {
      class: "inline-form",
      hidden: true,
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api("POST", `/projects/${project.id}/labels`, { name: name.value.trim(), color: color.value });
          toast(`Label "${name.value.trim()}" added`, "ok");
          onAdded();
        } catch (err) {
          toast(`Could not add the label: ${err.message}`, "error");
        }
      },
    },
    color,
    name,
    h("button", { class: "btn small primary", type: "submit" }, "Add"),
  );
  const open = h("button", { class: "btn small ghost", id: "add-project-label", onclick: () => ((form.hidden = false), (open.hidden = true), name.focus()) }, "+ Label");
  return h("span", { class: "inline-form-wrap" }, open, form);
}

function imageTile(img) {
  const thumb = h("img", { alt: img.file_name, loading: "lazy" });
  // Thumbnails need the token, so they are fetched when they scroll into view.
  const io = new IntersectionObserver((entries) => {
    if (entries.some((en) => en.isIntersecting)) {
      io.disconnect();
      imageUrl(img.id)
        .then((url) => (thumb.src = url))
        .catch(() => thumb.classList.add("broken"));
    }
  });
  io.observe(thumb);
  return h(
    "a",
    { class: "tile", href: `#/images/${img.id}`, dataset: { imageId: img.id }, title: img.file_name },
    h("div", { class: "thumb" }, thumb),
    h(
      "div",
      { class: "tile-meta" },
      h("span", { class: "name" }, img.file_name),
      h("span", { class: `pill status-${img.status}` }, STATUS_NAMES[img.status] || img.status),
      img.annotation_count ? h("span", { class: "muted small" }, `${img.annotation_count} inst.`) : null,
    ),
  );
}
