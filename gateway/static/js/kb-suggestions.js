/* Suggested answers in the agent console (issue 17): what a person answered when the AI found
 * nothing in the knowledge base. List the pending ones, edit a question or an answer, approve one
 * (it is embedded into the knowledge base and the AI answers with it from then on) or reject it.
 * Uses the console's signed-in requests (window.CRM.agentConsole, from agent.js). */
"use strict";

(function () {
  const { el, setFieldError } = window.CRM;
  const $ = (id) => document.getElementById(id);

  const list = $("kb-suggestions");
  const form = $("kb-suggestion-form");
  const questionField = $("kb-suggestion-question");
  const answerField = $("kb-suggestion-answer");
  const status = $("kb-suggestions-status");

  let editing = null;

  const consoleApi = () => window.CRM.agentConsole;
  const path = (id, action) =>
    "/api/v1/kb-suggestions/" + encodeURIComponent(id) + (action ? "/" + action : "");

  function say(tone, message) {
    status.className = "notice" + (tone ? " " + tone : "");
    status.textContent = message;
  }

  function problem(data, code) {
    return (data && data.message) || "HTTP " + code;
  }

  function short(text, size) {
    return text.length > size ? text.slice(0, size - 1) + "…" : text;
  }

  /** Run a handler; a signed-out console (401) has already shown the sign-in form, anything else is said. */
  function guarded(handler) {
    return (...args) =>
      handler(...args).catch((error) => {
        if (error.message !== "unauthorized") say("bad", "Connection problem; try again.");
      });
  }

  async function load() {
    const { status: code, data } = await consoleApi().call("/api/v1/kb-suggestions?status=pending");
    if (code !== 200) {
      say("bad", "Could not load the suggested answers: " + problem(data, code));
      return;
    }
    const suggestions = data.suggestions;
    list.replaceChildren(
      ...suggestions.map((s) => {
        const label = short(s.question.replace(/\s+/g, " "), 60);
        return el(
          "li",
          { "data-suggestion-id": s.id },
          el("strong", {}, s.question),
          el("span", { class: "text" }, s.answer),
          el("button", { type: "button", class: "link", onclick: () => edit(s), "aria-label": "Edit " + label }, "Edit"),
          el(
            "button",
            { type: "button", class: "link", onclick: guarded(() => review(s, "approve")), "aria-label": "Approve " + label },
            "Approve"
          ),
          el(
            "button",
            { type: "button", class: "link", onclick: guarded(() => review(s, "reject")), "aria-label": "Reject " + label },
            "Reject"
          )
        );
      })
    );
    if (!suggestions.length) list.append(el("li", { class: "empty" }, "Nothing to review."));
    if (editing && !suggestions.some((s) => s.id === editing.id)) closeForm();
  }

  function closeForm() {
    editing = null;
    form.hidden = true;
    setFieldError(questionField, "");
    setFieldError(answerField, "");
  }

  function edit(suggestion) {
    editing = suggestion;
    questionField.value = suggestion.question;
    answerField.value = suggestion.answer;
    setFieldError(questionField, "");
    setFieldError(answerField, "");
    form.hidden = false;
    answerField.focus();
  }

  async function review(suggestion, action) {
    const { status: code, data } = await consoleApi().call(path(suggestion.id, action), { method: "POST" });
    const label = "“" + short(suggestion.question.replace(/\s+/g, " "), 60) + "”";
    if (code === 200) {
      if (editing && editing.id === suggestion.id) closeForm();
      say(
        "ok",
        action === "approve"
          ? "Approved " + label + ": now in the knowledge base as " + data.article_id + "."
          : "Rejected " + label + "."
      );
    } else {
      say("bad", (action === "approve" ? "Not approved: " : "Not rejected: ") + problem(data, code));
    }
    await load();
  }

  $("cancel-kb-suggestion").addEventListener("click", closeForm);

  form.addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    if (!editing) return;
    const question = questionField.value.trim();
    const answer = answerField.value.trim();
    setFieldError(questionField, question ? "" : "Write the customer's question");
    setFieldError(answerField, answer ? "" : "Write the answer");
    if (!question || !answer) {
      (question ? answerField : questionField).focus();
      return;
    }
    $("save-kb-suggestion").disabled = true;
    try {
      const { status: code, data } = await consoleApi().call(path(editing.id), {
        method: "PATCH",
        body: { question, answer },
      });
      if (code === 200) {
        say("ok", "Saved the changes; approve it when it reads right.");
        closeForm();
        await load();
      } else if (code === 422 && data && data.detail) {
        for (const [name, field] of [["question", questionField], ["answer", answerField]]) {
          const messages = data.detail.filter((d) => d.field === name || d.field === "body." + name).map((d) => d.message);
          setFieldError(field, messages.join("; "));
        }
      } else {
        say("bad", "Not saved: " + problem(data, code));
        if (code === 404 || code === 409) {
          closeForm();
          await load();
        }
      }
    } finally {
      $("save-kb-suggestion").disabled = false;
    }
  }));

  document.addEventListener("crm:signed-in", () => {
    closeForm();
    say("", "");
    load().catch(() => say("warn", "Could not load the suggested answers."));
  });
})();
