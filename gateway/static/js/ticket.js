/* The ticket page a reply notice's secure link opens: the live conversation and a reply box.
 *
 * The link is /support/ticket/TKT-0042#token=...: the token is in the fragment, which the browser
 * never sends to a server (no access log, no Referer). It goes to the API in the X-Ticket-Token
 * header only. A link pasted with ?token=... works too; the token is then moved into the fragment
 * so it does not stay in the address bar's query or the history. */
"use strict";

(function () {
  const { api, checkLength, setFieldError, showErrorSummary, TicketStatusPanel, TICKET } = window.CRM;

  const MESSAGE_MAX = 5000;
  const FINISHED = new Set(["resolved", "closed"]);

  const problem = document.getElementById("link-problem");
  const container = document.getElementById("status-panel");
  const section = document.getElementById("reply");
  const closedNote = document.getElementById("closed-note");
  const form = document.getElementById("reply-form");
  const textarea = document.getElementById("reply-message");
  const counter = document.getElementById("reply-count");
  const button = document.getElementById("send-reply");
  const status = document.getElementById("reply-status");
  const summary = document.getElementById("error-summary");

  const number = decodeURIComponent(window.location.pathname.split("/").pop() || "").toUpperCase();
  const fromHash = new URLSearchParams(window.location.hash.slice(1)).get("token");
  const url = new URL(window.location.href);
  const fromQuery = url.searchParams.get("token");
  const token = (fromHash || fromQuery || "").trim();
  if (fromQuery) {
    url.searchParams.delete("token");
    url.hash = "token=" + encodeURIComponent(token);
    history.replaceState(null, "", url);
  }

  function refuse(text) {
    problem.textContent = text;
    problem.hidden = false;
    section.hidden = true;
  }

  if (!TICKET.test(number) || !token) {
    refuse("This link is incomplete. Open the whole link from the email we sent you, or look the ticket up on the Check a ticket page.");
    return;
  }
  document.title = "Ticket " + number + " · TechCorp support";
  const auth = { "X-Ticket-Token": token };

  // One id per typed answer, kept until it is accepted: a resend after a network failure is the
  // same answer, recorded once.
  let replyId = null;
  function newReplyId() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID().replace(/-/g, "");
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const panel = new TicketStatusPanel(container, number, null, {
    headers: auth,
    onNotFound: (code, data) => {
      container.replaceChildren();
      refuse(
        (data && data.message) ||
          "This link does not open a ticket. Open the whole link from the email we sent you."
      );
    },
    onTicket: (ticket) => {
      const finished = FINISHED.has(ticket.status) || ticket.channel !== "web_form";
      section.hidden = finished;
      closedNote.hidden = !finished;
    },
  });
  panel.start();

  function check() {
    return checkLength(textarea.value, 1, MESSAGE_MAX, "Write your answer first", "Your answer");
  }

  textarea.addEventListener("input", () => {
    const length = textarea.value.trim().length;
    counter.textContent = length + " / " + MESSAGE_MAX;
    counter.classList.toggle("over", length > MESSAGE_MAX);
    replyId = null; // a changed answer is a new answer
    if (textarea.getAttribute("aria-invalid") === "true") setFieldError(textarea, check());
  });

  let sending = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (sending) return;
    const error = check();
    setFieldError(textarea, error);
    showErrorSummary(summary, error ? [[textarea, error]] : []);
    if (error) return;
    replyId = replyId || newReplyId();
    sending = true;
    button.disabled = true;
    status.className = "notice";
    status.textContent = "Sending…";
    try {
      const { status: code, data } = await api("/api/v1/tickets/" + encodeURIComponent(number) + "/replies", {
        method: "POST",
        headers: auth,
        body: { message: textarea.value.trim(), reply_id: replyId },
      });
      if (code === 202) {
        textarea.value = "";
        counter.textContent = "0 / " + MESSAGE_MAX;
        replyId = null;
        status.textContent = (data && data.message) || "Your reply was sent.";
        panel.poll();
      } else {
        status.className = "notice bad";
        status.textContent =
          (data && data.message) || "Your reply could not be sent (HTTP " + code + "). Please try again.";
        if (code === 409) panel.poll(); // closed meanwhile: the page says so
      }
    } catch (_) {
      status.className = "notice bad";
      status.textContent = "Connection problem: your reply was not sent. Please try again.";
    } finally {
      sending = false;
      button.disabled = false;
    }
  });
})();
