/* Shared helpers for the support pages and the agent console: DOM building (text only, never
 * HTML from data), JSON requests, dates, message threads and the live ticket status panel. */
"use strict";

(function () {
  /** Build an element; children are nodes or strings (always inserted as text). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** fetch() for JSON: resolves to {status, data, headers}; rejects only on network failure. */
  async function api(path, options) {
    const opts = options || {};
    const headers = { Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (opts.key) headers.Authorization = "Bearer " + opts.key;
    Object.assign(headers, opts.headers || {});
    const response = await fetch(path, {
      method: opts.method || "GET",
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: "no-store",
      credentials: "omit",
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    return { status: response.status, data, headers: response.headers };
  }

  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

  function formatDateTime(iso) {
    return iso ? dateTime.format(new Date(iso)) : "";
  }

  function formatTime(date) {
    return timeOnly.format(date);
  }

  /** "in 1 h 20 min" / "5 min ago" relative to now. */
  function formatRelative(iso) {
    const diff = new Date(iso).getTime() - Date.now();
    const minutes = Math.round(Math.abs(diff) / 60000);
    let span;
    if (minutes < 1) span = "less than a minute";
    else if (minutes < 60) span = minutes + " min";
    else if (minutes < 48 * 60) span = Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
    else span = Math.round(minutes / 1440) + " days";
    return diff >= 0 ? "in " + span : span + " ago";
  }

  /* The project's words and their labels come from the server (GET /api/v1/vocabulary, which
   * serves core/vocabulary.py), so the pages never repeat them. The maps below are filled in when
   * it arrives; pages wait for `vocabulary` before they render anything that needs a label. */
  const CHANNELS = {};
  const CATEGORIES = {};
  const PRIORITIES = {};
  const STATUS_FOR_CUSTOMER = {};
  const REASONS = {};
  const DELIVERY = {};

  function fill(map, terms) {
    for (const term of terms || []) map[term.value] = term.label;
  }

  /** Resolves to the vocabulary (see GET /api/v1/vocabulary), or null if it could not be loaded. */
  const vocabulary = (async () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const { status, data } = await api("/api/v1/vocabulary");
        if (status === 200 && data) {
          fill(CHANNELS, data.channels);
          fill(CATEGORIES, data.ticket_categories);
          fill(PRIORITIES, data.priorities);
          fill(STATUS_FOR_CUSTOMER, data.ticket_statuses);
          fill(REASONS, data.escalation_reasons);
          fill(DELIVERY, data.delivery_statuses);
          return data;
        }
      } catch (_) {
        /* network trouble: try again below */
      }
      if (attempt < 2) await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
    }
    return null; // labels fall back to the words themselves
  })();

  function label(map, key) {
    return map[key] || String(key || "").replace(/_/g, " ");
  }

  function badge(kind, key, text) {
    return el("span", { class: "badge " + kind + "-" + key }, text);
  }

  /** Who wrote a message, as the reader should see it. */
  function author(message, audience) {
    if (message.role === "customer") return audience === "customer" ? "You" : "Customer";
    if (message.role === "agent") return audience === "customer" ? "TechCorp assistant" : "AI agent";
    if (message.role === "human_agent") return audience === "customer" ? "TechCorp support team" : "Human agent";
    return "System";
  }

  function messageItem(message, audience) {
    const when = el("time", { datetime: message.created_at }, formatDateTime(message.created_at));
    const head = el("div", { class: "who" }, el("span", {}, author(message, audience)), when);
    // Agents see what became of each reply (a customer only sees the replies themselves).
    if (audience === "agent" && message.direction === "outbound" && message.delivery_status) {
      const status = message.delivery_status;
      head.append(
        el(
          "span",
          { class: "badge d-" + status, "data-delivery-status": status, title: "Delivery status" },
          label(DELIVERY, status)
        )
      );
    }
    const body = el("div", { class: "body" }, message.content);
    if (message.html) {
      // Our replies arrive as HTML the server rendered from Markdown with raw HTML escaped and
      // script links dropped (core/markdown.py); a customer's own words are always text.
      body.classList.add("rich");
      body.innerHTML = message.html;
    }
    return el(
      "li",
      { class: "msg " + message.role, "data-message-id": message.id, "data-role": message.role },
      head,
      body
    );
  }

  function renderThread(list, messages, audience) {
    list.replaceChildren(...messages.map((m) => messageItem(m, audience)));
  }

  /**
   * The live status of one ticket: polls GET /api/v1/tickets/{id}?email=... every 2 s while the
   * page is visible, renders the thread, and announces new replies to screen readers.
   * options.headers replace the email (the ticket link's X-Ticket-Token); options.onNotFound is
   * called on 404 and 403, options.onTicket with each ticket read.
   */
  class TicketStatusPanel {
    constructor(container, ticketId, email, options) {
      this.container = container;
      this.ticketId = ticketId;
      this.email = email;
      this.headers = (options && options.headers) || null;
      this.intervalMs = (options && options.intervalMs) || 2000;
      this.onNotFound = (options && options.onNotFound) || null;
      this.onTicket = (options && options.onTicket) || null;
      this.seen = new Set();
      this.first = true;
      this.timer = null;
      this.stopped = false;
      this.inFlight = false;
      this.build();
      this.onVisibility = () => {
        if (!document.hidden && !this.stopped) this.poll();
      };
      document.addEventListener("visibilitychange", this.onVisibility);
    }

    build() {
      this.title = el("h2", { id: "status-title" }, "Ticket " + this.ticketId);
      this.badgeSlot = el("span", { id: "ticket-status" });
      this.meta = el("dl", { class: "meta" });
      this.waiting = el("p", { class: "waiting", id: "status-waiting" });
      this.thread = el("ol", { class: "thread", id: "ticket-thread", "aria-label": "Messages on this ticket" });
      this.announcer = el("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
      this.note = el("p", { class: "poll-note", id: "poll-note" }, "Checking for updates…");
      const panel = el(
        "section",
        { class: "panel status-panel", "aria-labelledby": "status-title" },
        el("div", { class: "panel-head" }, this.title, this.badgeSlot),
        this.meta,
        this.waiting,
        this.thread,
        this.announcer,
        this.note
      );
      this.container.replaceChildren(panel);
    }

    start() {
      this.poll();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      document.removeEventListener("visibilitychange", this.onVisibility);
    }

    schedule() {
      clearTimeout(this.timer);
      if (!this.stopped) this.timer = setTimeout(() => this.poll(), this.intervalMs);
    }

    async poll() {
      if (this.inFlight || this.stopped) return;
      if (document.hidden) return; // resumed by visibilitychange
      this.inFlight = true;
      try {
        await vocabulary; // the labels
        const path =
          "/api/v1/tickets/" +
          encodeURIComponent(this.ticketId) +
          (this.email ? "?email=" + encodeURIComponent(this.email) : "");
        const { status, data } = await api(path, this.headers ? { headers: this.headers } : undefined);
        if (status === 200 && data) {
          this.render(data);
          if (this.onTicket) this.onTicket(data);
          this.note.textContent = "Updates automatically every 2 seconds · last checked " + formatTime(new Date());
        } else if (status === 404 || status === 403) {
          this.note.textContent = "";
          if (this.onNotFound) this.onNotFound(status, data);
          this.stop();
          return;
        } else {
          this.note.textContent = "Could not check for updates (HTTP " + status + "); retrying…";
        }
      } catch (_) {
        this.note.textContent = "Connection problem; retrying…";
      } finally {
        this.inFlight = false;
      }
      this.schedule();
    }

    render(ticket) {
      this.badgeSlot.replaceChildren(badge("s", ticket.status, label(STATUS_FOR_CUSTOMER, ticket.status)));
      const rows = [
        ["Subject", ticket.subject || "—"],
        ["Category", label(CATEGORIES, ticket.category)],
        ["Priority", label(PRIORITIES, ticket.priority)],
        ["Opened", formatDateTime(ticket.created_at)],
      ];
      this.meta.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

      const replies = ticket.messages.filter((m) => m.direction === "outbound");
      const human = ticket.escalation && ticket.escalation.status === "open";
      if (human) {
        this.waiting.replaceChildren(
          el("span", { class: "spinner", "aria-hidden": "true" }),
          "A member of our support team is looking at your request and will reply here."
        );
      } else if (replies.length === 0) {
        this.waiting.replaceChildren(
          el("span", { class: "spinner", "aria-hidden": "true" }),
          "Our assistant is preparing an answer. It will appear here automatically."
        );
      } else {
        this.waiting.replaceChildren();
      }
      this.waiting.hidden = this.waiting.childNodes.length === 0;

      const fresh = ticket.messages.filter((m) => !this.seen.has(m.id));
      if (fresh.length || this.thread.childElementCount !== ticket.messages.length) {
        renderThread(this.thread, ticket.messages, "customer");
      }
      if (!this.first) {
        const newReplies = fresh.filter((m) => m.direction === "outbound");
        if (newReplies.length) {
          this.announcer.textContent =
            "New reply from " + author(newReplies[newReplies.length - 1], "customer") + ".";
        }
      }
      fresh.forEach((m) => this.seen.add(m.id));
      this.first = false;
    }
  }

  /* ------------------------------------------------------------- form validation helpers */

  function setFieldError(input, message) {
    const errorId = input.dataset.errorId || input.id + "-error";
    const slot = document.getElementById(errorId);
    if (slot) slot.textContent = message || "";
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  /** Show a summary of errors (links to the fields) and move focus to it. */
  function showErrorSummary(summary, errors) {
    const list = summary.querySelector("ul");
    list.replaceChildren(
      ...errors.map(([input, message]) =>
        el(
          "li",
          {},
          el(
            "a",
            {
              href: "#" + input.id,
              onclick: (event) => {
                event.preventDefault();
                input.focus();
              },
            },
            message
          )
        )
      )
    );
    summary.hidden = errors.length === 0;
    if (errors.length) summary.focus();
  }

  const CONTROL_CHARS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;
  // The shape the server's email validator accepts in practice: local@domain.tld, no spaces.
  const EMAIL = /^[^\s@]+@[^\s@.]+(\.[^\s@.]+)*\.[A-Za-z]{2,}$/;

  function checkEmail(value) {
    const email = value.trim();
    if (!email) return "Enter your email address";
    if (email.length > 254 || !EMAIL.test(email)) return "Enter an email address like name@example.com";
    return "";
  }

  /** A trimmed text between min and max characters; `empty` and `noun` word the messages. */
  function checkLength(value, min, max, empty, noun) {
    const text = value.trim();
    if (!text) return empty;
    if (CONTROL_CHARS.test(text)) return noun + " contains characters we cannot accept";
    if (text.length < min) return noun + " must be at least " + min + (min === 1 ? " character" : " characters");
    if (text.length > max) return noun + " must be at most " + max + " characters";
    return "";
  }

  /** +14155550100 from "+1 (415) 555-0100" or "0014155550100"; null when not E.164. */
  function normalisePhone(value) {
    let digits = value.trim().replace(/[^\d+]/g, "");
    if (digits.startsWith("00")) digits = "+" + digits.slice(2);
    return /^\+[1-9]\d{6,14}$/.test(digits) ? digits : null;
  }

  const TICKET = /^TKT-\d{4,12}$/;

  window.CRM = {
    el,
    api,
    badge,
    label,
    author,
    formatDateTime,
    formatRelative,
    formatTime,
    renderThread,
    messageItem,
    TicketStatusPanel,
    setFieldError,
    showErrorSummary,
    checkEmail,
    checkLength,
    normalisePhone,
    CATEGORIES,
    CHANNELS,
    DELIVERY,
    PRIORITIES,
    REASONS,
    TICKET,
    vocabulary,
  };
})();
