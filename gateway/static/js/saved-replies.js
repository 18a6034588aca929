/* Saved replies in the agent console: pick one and insert it into the reply box with its
 * placeholders filled by the server (POST /api/v1/saved-replies/{id}/render), and create, edit or
 * delete them. Uses the console's signed-in requests (window.CRM.agentConsole, from agent.js). */
"use strict";

(function () {
  const { el, setFieldError } = window.CRM;
  const $ = (id) => document.getElementById(id);

  const picker = $("saved-reply");
  const list = $("saved-replies");
  const form = $("saved-reply-form");
  const titleField = $("saved-reply-title");
  const bodyField = $("saved-reply-body");
  const status = $("saved-replies-status");

  let replies = [];
  let editingId = null;

  const consoleApi = () => window.CRM.agentConsole;

  function say(tone, message) {
    status.className = "notice" + (tone ? " " + tone : "");
    status.textContent = message;
  }

  function problem(data, code) {
    return (data && data.message) || "HTTP " + code;
  }

  async function load() {
    const { status: code, data } = await consoleApi().call("/api/v1/saved-replies");
    if (code !== 200) {
      say("bad", "Could not load the saved replies: " + problem(data, code));
      return;
    }
    replies = data.saved_replies;
    const chosen = picker.value;
    picker.replaceChildren(
      el("option", { value: "" }, replies.length ? "Choose a saved reply…" : "No saved replies yet"),
      ...replies.map((r) => el("option", { value: r.id }, r.title))
    );
    if (replies.some((r) => r.id === chosen)) picker.value = chosen;
    list.replaceChildren(
      ...replies.map((r) =>
        el(
          "li",
          { "data-saved-reply-id": r.id },
          el("strong", {}, r.title),
          el("button", { type: "button", class: "link", onclick: () => edit(r), "aria-label": "Edit " + r.title }, "Edit"),
          el("button", { type: "button", class: "link", onclick: guarded(() => remove(r)), "aria-label": "Delete " + r.title }, "Delete"),
          el("span", { class: "text" }, r.body)
        )
      )
    );
    if (!replies.length) list.append(el("li", { class: "empty" }, "None yet: write the first one below."));
  }

  /* ------------------------------------------------------------------ inserting into the reply */

  function insertIntoReply(text) {
    const reply = $("reply");
    const start = reply.selectionStart ?? reply.value.length;
    const end = reply.selectionEnd ?? reply.value.length;
    reply.value = reply.value.slice(0, start) + text + reply.value.slice(end);
    const caret = start + text.length;
    reply.focus();
    reply.setSelectionRange(caret, caret);
  }

  /** Run a handler; a signed-out console (401) has already shown the sign-in form, anything else is said. */
  function guarded(handler) {
    return (...args) =>
      handler(...args).catch((error) => {
        if (error.message !== "unauthorized") say("bad", "Connection problem; try again.");
      });
  }

  $("insert-saved-reply").addEventListener("click", guarded(async () => {
    const selected = consoleApi() && consoleApi().selected();
    if (!picker.value) {
      setFieldError(picker, "Choose a saved reply to insert");
      picker.focus();
      return;
    }
    if (!selected) return;
    setFieldError(picker, "");
    const path = "/api/v1/saved-replies/" + encodeURIComponent(picker.value) + "/render";
    const { status: code, data } = await consoleApi().call(path, {
      method: "POST",
      body: { conversation_id: selected.conversationId },
    });
    if (code !== 200) {
      setFieldError(picker, "Not inserted: " + problem(data, code));
      if (code === 404) await load();
      return;
    }
    insertIntoReply(data.text);
    if (data.unfilled.length) {
      setFieldError(
        picker,
        "Nothing on record for " + data.unfilled.map((p) => "{" + p + "}").join(", ") + ": edit it in the reply before sending"
      );
    }
  }));

  picker.addEventListener("change", () => setFieldError(picker, ""));

  /* ------------------------------------------------------------------ create, edit, delete */

  function resetForm() {
    editingId = null;
    titleField.value = "";
    bodyField.value = "";
    setFieldError(titleField, "");
    setFieldError(bodyField, "");
    $("saved-reply-form-title").textContent = "New saved reply";
    $("cancel-saved-reply").hidden = true;
  }

  function edit(reply) {
    editingId = reply.id;
    titleField.value = reply.title;
    bodyField.value = reply.body;
    $("saved-reply-form-title").textContent = "Edit “" + reply.title + "”";
    $("cancel-saved-reply").hidden = false;
    titleField.focus();
  }

  async function remove(reply) {
    const path = "/api/v1/saved-replies/" + encodeURIComponent(reply.id);
    const { status: code, data } = await consoleApi().call(path, { method: "DELETE" });
    if (code === 204 || code === 404) {
      if (editingId === reply.id) resetForm();
      say("ok", "Deleted “" + reply.title + "”.");
    } else {
      say("bad", "Not deleted: " + problem(data, code));
    }
    await load();
  }

  $("cancel-saved-reply").addEventListener("click", resetForm);

  form.addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    const title = titleField.value.trim();
    const body = bodyField.value.trim();
    setFieldError(titleField, title ? "" : "Give the saved reply a title");
    setFieldError(bodyField, body ? "" : "Write the text of the saved reply");
    if (!title || !body) {
      (title ? bodyField : titleField).focus();
      return;
    }
    const path = editingId ? "/api/v1/saved-replies/" + encodeURIComponent(editingId) : "/api/v1/saved-replies";
    $("save-saved-reply").disabled = true;
    try {
      const { status: code, data } = await consoleApi().call(path, {
        method: editingId ? "PATCH" : "POST",
        body: { title, body },
      });
      if (code === 200 || code === 201) {
        say("ok", (code === 201 ? "Saved “" : "Updated “") + data.title + "”.");
        resetForm();
        await load();
      } else if (code === 409) {
        setFieldError(titleField, problem(data, code));
        titleField.focus();
      } else if (code === 422 && data && data.detail) {
        for (const [name, field] of [["title", titleField], ["body", bodyField]]) {
          const messages = data.detail.filter((d) => d.field === name || d.field === "body." + name).map((d) => d.message);
          setFieldError(field, messages.join("; "));
        }
        if (!data.detail.some((d) => d.field.endsWith("title") || d.field.endsWith("body"))) say("bad", problem(data, code));
        (titleField.getAttribute("aria-invalid") === "true" ? titleField : bodyField).focus();
      } else {
        say("bad", "Not saved: " + problem(data, code));
      }
    } finally {
      $("save-saved-reply").disabled = false;
    }
  }));

  document.addEventListener("crm:signed-in", () => {
    resetForm();
    say("", "");
    load().catch(() => say("warn", "Could not load the saved replies."));
  });
})();
