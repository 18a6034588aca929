/* The web support form: the server's rules checked in the browser, accessible errors, then the
 * ticket number and its live status. */
"use strict";

(function () {
  const { api, el, label, checkEmail, checkLength, normalisePhone, setFieldError, showErrorSummary } = window.CRM;
  const { TicketStatusPanel, vocabulary, PRIORITIES } = window.CRM;

  const form = document.getElementById("support-form");
  const summary = document.getElementById("error-summary");
  const formStatus = document.getElementById("form-status");
  const submit = document.getElementById("submit");
  const message = document.getElementById("message");
  const counter = document.getElementById("message-count");
  // The choices come from the server's vocabulary (buildChoices, below).
  let categories = [];
  let priorities = [];
  const MESSAGE_MAX = 5000;

  const fields = {
    name: document.getElementById("name"),
    email: document.getElementById("email"),
    phone: document.getElementById("phone"),
    subject: document.getElementById("subject"),
    category: document.getElementById("category"),
    priority: document.getElementById("priority"),
    message,
  };

  function priorityValue() {
    const checked = form.querySelector('input[name="priority"]:checked');
    return checked ? checked.value : "";
  }

  // The same rules as the server (POST /api/v1/support/form).
  const rules = {
    name: () => checkLength(fields.name.value, 1, 100, "Enter your name", "Your name"),
    email: () => checkEmail(fields.email.value),
    phone: () =>
      fields.phone.value.trim() && !normalisePhone(fields.phone.value)
        ? "Enter the number in international format, starting with +, for example +14155550100"
        : "",
    subject: () => checkLength(fields.subject.value, 3, 200, "Enter a subject", "The subject"),
    category: () => (categories.includes(fields.category.value) ? "" : "Choose a category"),
    priority: () => (priorities.includes(priorityValue()) ? "" : "Choose a priority"),
    message: () => checkLength(fields.message.value, 10, MESSAGE_MAX, "Tell us how we can help", "Your message"),
  };

  function focusTarget(name) {
    if (name !== "priority") return fields[name];
    return form.querySelector('input[name="priority"]:checked') || form.querySelector('input[name="priority"]');
  }

  function validate(name) {
    const problem = rules[name]();
    setFieldError(fields[name], problem);
    return problem;
  }

  function validateAll() {
    const errors = [];
    for (const name of Object.keys(rules)) {
      const problem = validate(name);
      if (problem) errors.push([focusTarget(name), problem]);
    }
    return errors;
  }

  // Errors appear on submit, then update as the person types. No validation on blur: a message
  // appearing while the pointer is on its way to "Send request" would move the button away.
  let attempted = false;
  for (const [name, input] of Object.entries(fields)) {
    const recheck = () => {
      if (attempted || input.getAttribute("aria-invalid") === "true") validate(name);
    };
    input.addEventListener("input", recheck);
    input.addEventListener("change", recheck);
  }

  /** The category options and the priority radios, from the vocabulary; the form is usable after. */
  function buildChoices(vocab) {
    categories = vocab.ticket_categories.map((term) => term.value);
    fields.category.append(...vocab.ticket_categories.map((term) => el("option", { value: term.value }, term.label)));
    priorities = vocab.web_form.priorities;
    document.getElementById("priority-choices").replaceChildren(
      ...priorities.map((value) =>
        el(
          "label",
          { for: "priority-" + value },
          el("input", {
            type: "radio",
            id: "priority-" + value,
            name: "priority",
            value,
            checked: value === vocab.web_form.default_priority,
          }),
          " " + label(PRIORITIES, value)
        )
      )
    );
    submit.disabled = false;
  }

  vocabulary.then((vocab) => {
    if (vocab) {
      buildChoices(vocab);
    } else {
      formStatus.className = "notice bad";
      formStatus.textContent = "We could not load the form. Check your connection and reload the page.";
    }
  });

  function updateCounter() {
    const length = message.value.trim().length;
    counter.textContent = length + " / " + MESSAGE_MAX;
    counter.classList.toggle("over", length > MESSAGE_MAX);
  }
  message.addEventListener("input", updateCounter);
  updateCounter();

  function setBusy(busy) {
    submit.disabled = busy;
    submit.textContent = busy ? "Sending…" : "Send request";
    form.setAttribute("aria-busy", busy ? "true" : "false");
  }

  function showServerErrors(detail) {
    const errors = [];
    for (const item of detail || []) {
      const name = String(item.field || "").split(".")[0];
      if (fields[name]) {
        setFieldError(fields[name], item.message);
        errors.push([focusTarget(name), item.message]);
      }
    }
    if (errors.length) showErrorSummary(summary, errors);
    return errors.length;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    attempted = true;
    formStatus.textContent = "";
    formStatus.className = "notice";
    const errors = validateAll();
    showErrorSummary(summary, errors);
    if (errors.length) return;

    const payload = {
      name: fields.name.value.trim(),
      email: fields.email.value.trim(),
      subject: fields.subject.value.trim(),
      category: fields.category.value,
      priority: priorityValue(),
      message: fields.message.value.trim(),
    };
    const phone = normalisePhone(fields.phone.value);
    if (phone) payload.phone = phone;

    setBusy(true);
    try {
      const { status, data, headers } = await api("/api/v1/support/form", { method: "POST", body: payload });
      if (status === 201 && data && data.ticket_id) {
        showTicket(data.ticket_id, payload.email);
        return;
      }
      if (status === 422 && data && showServerErrors(data.detail)) return;
      formStatus.className = "notice bad";
      if (status === 429) {
        const wait = Number(headers.get("Retry-After")) || 60;
        formStatus.textContent = "You have sent several requests in a short time. Please try again in " + wait + " seconds.";
      } else if (status === 413) {
        formStatus.textContent = "Your message is too long to send. Please shorten it.";
      } else {
        formStatus.textContent =
          "We could not take your request just now" + (data && data.message ? " (" + data.message + ")" : "") +
          ". Nothing was lost: please try again in a moment.";
      }
    } catch (_) {
      formStatus.className = "notice bad";
      formStatus.textContent = "We could not reach the support service. Check your connection and try again.";
    } finally {
      setBusy(false);
    }
  });

  let panel = null;

  function showTicket(ticketId, email) {
    document.dispatchEvent(new CustomEvent("crm:ticket-created", { detail: { ticket: ticketId } }));
    try {
      sessionStorage.setItem("crmfte.lastTicket", JSON.stringify({ ticket: ticketId, email }));
    } catch (_) {
      /* storage disabled: the status page simply asks again */
    }
    document.getElementById("form-section").hidden = true;
    const section = document.getElementById("ticket-section");
    section.hidden = false;
    document.getElementById("ticket-number").textContent = ticketId;
    document.getElementById("status-link").href = "/support/status?ticket=" + encodeURIComponent(ticketId);
    document.title = ticketId + " received · TechCorp support";
    panel = new TicketStatusPanel(document.getElementById("status-panel"), ticketId, email);
    panel.start();
    document.getElementById("ticket-title").focus();
  }

  document.getElementById("new-request").addEventListener("click", () => {
    if (panel) panel.stop();
    panel = null;
    const keep = { name: fields.name.value, email: fields.email.value, phone: fields.phone.value };
    form.reset();
    fields.name.value = keep.name;
    fields.email.value = keep.email;
    fields.phone.value = keep.phone;
    attempted = false;
    for (const input of Object.values(fields)) setFieldError(input, "");
    summary.hidden = true;
    updateCounter();
    document.getElementById("ticket-section").hidden = true;
    document.getElementById("form-section").hidden = false;
    document.title = "Contact support · TechCorp";
    fields.subject.focus();
  });
})();
