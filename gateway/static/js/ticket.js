/* The ticket page a reply notice's secure link opens: the live conversation, a reply box and, once
 * the conversation is closed, "How did we do?" (a rating from 1 to 5 with an optional comment).
 *
 * The link is /support/ticket/TKT-0042#token=...: the token is in the fragment, which the browser
 * never sends to a server (no access log, no Referer). It goes to the API in the X-Ticket-Token
 * header only. A link pasted with ?token=... works too; the token is then moved into the fragment
 * so it does not stay in the address bar's query or the history. An email's rating link adds the
 * score it stands for: #token=...&score=4 (core/ticket_links.py `rating_link`). */
"use strict";

(function () {
  const { api, checkLength, setFieldError, showErrorSummary, TicketStatusPanel, TICKET } = window.CRM;

  const MESSAGE_MAX = 5000;
  const RATING_COMMENT_MAX = 1000;
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

  const ratingSection = document.getElementById("rating");
  const ratingForm = document.getElementById("rating-form");
  const ratingScore = document.getElementById("rating-score");
  const ratingScoreError = document.getElementById("rating-score-error");
  const ratingComment = document.getElementById("rating-comment");
  const ratingButton = document.getElementById("send-rating");
  const ratingStatus = document.getElementById("rating-status");

  const number = decodeURIComponent(window.location.pathname.split("/").pop() || "").toUpperCase();
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const url = new URL(window.location.href);
  const fromQuery = url.searchParams.get("token");
  const token = (fragment.get("token") || fromQuery || "").trim();
  // The score an email's rating link stands for (#token=...&score=4), if any and if 1 to 5.
  const linkedScore = /^[1-5]$/.test((fragment.get("score") || url.searchParams.get("score") || "").trim())
    ? (fragment.get("score") || url.searchParams.get("score")).trim()
    : null;
  if (fromQuery) {
    url.searchParams.delete("token");
    url.searchParams.delete("score");
    url.hash = "token=" + encodeURIComponent(token) + (linkedScore ? "&score=" + linkedScore : "");
    history.replaceState(null, "", url);
  }

  function refuse(text) {
    problem.textContent = text;
    problem.hidden = false;
    section.hidden = true;
    ratingSection.hidden = true;
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
      showRating(FINISHED.has(ticket.conversation_status) && !ticket.rated);
    },
  });
  panel.start();

  /* ------------------------------------------------------------------ the rating */

  // Once the server has had its say (thanks, already rated, too late), the answer stays on the page
  // whatever the conversation does next (a low score reopens it to a person).
  let ratingDone = false;
  let ratingShown = false;

  function showRating(closed) {
    if (ratingDone) return;
    ratingSection.hidden = !closed;
    if (!closed || ratingShown) return;
    ratingShown = true;
    if (linkedScore) {
      // Opened from an email's rating link: the score is chosen, and the customer confirms it with
      // Send. Never sent by itself: mail link scanners open every link in an email, and the one a
      // scanner happened to open is not the customer's rating.
      const choice = ratingForm.querySelector('input[name="score"][value="' + linkedScore + '"]');
      if (choice) choice.checked = true;
      ratingButton.focus();
    }
  }

  function chosenScore() {
    const checked = ratingForm.querySelector('input[name="score"]:checked');
    return checked ? Number(checked.value) : null;
  }

  function setScoreError(message) {
    ratingScoreError.textContent = message || "";
    if (message) ratingScore.setAttribute("aria-invalid", "true");
    else ratingScore.removeAttribute("aria-invalid");
  }

  function checkComment() {
    const text = ratingComment.value.trim();
    if (!text) return "";
    return checkLength(text, 1, RATING_COMMENT_MAX, "", "Your comment");
  }

  ratingForm.addEventListener("change", (event) => {
    if (event.target.name === "score") setScoreError("");
  });
  ratingComment.addEventListener("input", () => {
    if (ratingComment.getAttribute("aria-invalid") === "true") setFieldError(ratingComment, checkComment());
  });

  // What the page says when the server gives no message of its own.
  const RATING_ANSWERS = {
    409: "This conversation cannot be rated now.",
    410: "The time to rate this conversation has passed. Thank you all the same.",
  };

  function finishRating(text, bad) {
    ratingDone = true;
    ratingForm.hidden = true;
    ratingSection.hidden = false;
    ratingStatus.className = bad ? "notice warn" : "notice ok";
    ratingStatus.textContent = text;
  }

  let rating = false;
  ratingForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (rating) return;
    const score = chosenScore();
    const commentError = checkComment();
    setScoreError(score ? "" : "Choose a score from 1 to 5");
    setFieldError(ratingComment, commentError);
    if (!score) {
      ratingForm.querySelector('input[name="score"]').focus();
      return;
    }
    if (commentError) {
      ratingComment.focus();
      return;
    }
    rating = true;
    ratingButton.disabled = true;
    ratingStatus.className = "notice";
    ratingStatus.textContent = "Sending…";
    const body = { score, via: linkedScore ? "email_link" : "ticket_page" };
    const comment = ratingComment.value.trim();
    if (comment) body.comment = comment;
    try {
      const { status: code, data } = await api("/api/v1/tickets/" + encodeURIComponent(number) + "/rating", {
        method: "POST",
        headers: auth,
        body,
      });
      const said = data && data.message;
      if (code === 200 || code === 202) {
        finishRating(said || "Thank you!", false);
        panel.poll(); // a low score reopened the conversation: the page shows it
      } else if (code === 409 && data && data.detail && data.detail.reason === "not_closed") {
        ratingStatus.className = "notice warn";
        ratingStatus.textContent = said || "This conversation is still open: you can rate it once it is closed.";
        panel.poll();
      } else if (code === 409 || code === 410) {
        finishRating(said || RATING_ANSWERS[code], true);
      } else if (code === 422) {
        ratingStatus.className = "notice bad";
        ratingStatus.textContent = "Please check your rating and comment, then send it again.";
      } else {
        // A broken link (403) or too many tries (429) say why; anything else is ours to retry.
        ratingStatus.className = "notice bad";
        ratingStatus.textContent =
          ((code === 403 || code === 429) && said) || "Your rating could not be sent just now. Please try again in a moment.";
      }
    } catch (_) {
      ratingStatus.className = "notice bad";
      ratingStatus.textContent = "Connection problem: your rating was not sent. Please try again.";
    } finally {
      rating = false;
      ratingButton.disabled = false;
    }
  });

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
