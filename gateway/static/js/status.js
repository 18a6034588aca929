/* The ticket status page: ticket number + email → the live status panel. */
"use strict";

(function () {
  const { api, checkEmail, setFieldError, showErrorSummary, TicketStatusPanel, TICKET } = window.CRM;

  const form = document.getElementById("lookup-form");
  const ticket = document.getElementById("ticket");
  const email = document.getElementById("email");
  const summary = document.getElementById("error-summary");
  const status = document.getElementById("lookup-status");
  const container = document.getElementById("status-panel");
  let panel = null;

  function ticketNumber() {
    return ticket.value.trim().toUpperCase();
  }

  function checkTicket() {
    if (!ticket.value.trim()) return "Enter your ticket number";
    return TICKET.test(ticketNumber()) ? "" : "Enter a ticket number like TKT-0042";
  }

  function validate() {
    const errors = [];
    for (const [input, problem] of [
      [ticket, checkTicket()],
      [email, checkEmail(email.value)],
    ]) {
      setFieldError(input, problem);
      if (problem) errors.push([input, problem]);
    }
    return errors;
  }

  function show(number, address) {
    if (panel) panel.stop();
    status.textContent = "";
    status.className = "notice";
    panel = new TicketStatusPanel(container, number, address, {
      onNotFound: () => {
        container.replaceChildren();
        status.className = "notice bad";
        status.textContent =
          "We could not find ticket " + number + " for that email address. Check both and try again.";
      },
    });
    panel.start();
    linkTo = { number, address };
    linking.hidden = false;
    linkStatus.textContent = "";
    const url = new URL(window.location.href);
    url.searchParams.set("ticket", number);
    history.replaceState(null, "", url);
  }

  // Linking the ticket to a typed email or WhatsApp number (POST .../confirm-identity).
  const linking = document.getElementById("link-identity");
  const linkStatus = document.getElementById("link-status");
  let linkTo = null;
  for (const button of linking.querySelectorAll("button[data-identifier]")) {
    button.addEventListener("click", async () => {
      if (!linkTo) return;
      const path =
        "/api/v1/tickets/" + encodeURIComponent(linkTo.number) + "/confirm-identity?email=" +
        encodeURIComponent(linkTo.address);
      const { status, data } = await api(path, { method: "POST", body: { identifier: button.dataset.identifier } });
      linkStatus.className = status === 202 ? "notice" : "notice bad";
      linkStatus.textContent = (data && data.message) || "Something went wrong; try again later.";
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const errors = validate();
    showErrorSummary(summary, errors);
    if (errors.length) return;
    try {
      sessionStorage.setItem("crmfte.lastTicket", JSON.stringify({ ticket: ticketNumber(), email: email.value.trim() }));
    } catch (_) {
      /* storage disabled */
    }
    show(ticketNumber(), email.value.trim());
  });

  for (const input of [ticket, email]) {
    input.addEventListener("input", () => {
      if (input.getAttribute("aria-invalid") === "true") validate();
    });
  }

  // A link from the form (?ticket=...) fills the number; the email only comes from this tab's
  // own storage, never from the URL (it would end up in logs and history).
  const fromUrl = new URLSearchParams(window.location.search).get("ticket");
  let remembered = null;
  try {
    remembered = JSON.parse(sessionStorage.getItem("crmfte.lastTicket") || "null");
  } catch (_) {
    remembered = null;
  }
  if (fromUrl) ticket.value = fromUrl.toUpperCase();
  if (remembered && (!fromUrl || remembered.ticket === fromUrl.toUpperCase())) {
    ticket.value = remembered.ticket;
    email.value = remembered.email;
  }
  if (ticket.value && email.value && validate().length === 0) show(ticketNumber(), email.value.trim());
})();
