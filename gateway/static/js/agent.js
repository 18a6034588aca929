/* The human-agent console: sign in with an API key (sessionStorage), the escalation queue, the
 * customer's cross-channel history with the KB articles the AI used, and the reply box. */
"use strict";

(function () {
  const { el, api, badge, label, formatDateTime, formatRelative, renderThread, setFieldError } = window.CRM;
  const { CHANNELS, DELIVERY, PRIORITIES, REASONS, vocabulary } = window.CRM;

  const KEY_STORAGE = "crmfte.agentKey";
  const QUEUE_INTERVAL_MS = 5000;
  const CONVERSATION_INTERVAL_MS = 10000;

  const $ = (id) => document.getElementById(id);
  const loginSection = $("login-section");
  const consoleSection = $("console");
  const keyInput = $("api-key");
  const queueList = $("queue");
  const replyForm = $("reply-form");
  const reply = $("reply");
  const replyStatus = $("reply-status");

  let key = null;
  let selected = null; // {ticketId, conversationId}
  let queueTimer = null;
  let conversationTimer = null;
  let lastConversationJson = "";

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE);
    } catch (_) {
      return null;
    }
  }

  function showLogin(message) {
    key = null;
    try {
      sessionStorage.removeItem(KEY_STORAGE);
    } catch (_) {
      /* ignore */
    }
    clearTimeout(queueTimer);
    clearTimeout(conversationTimer);
    selected = null;
    consoleSection.hidden = true;
    $("who").hidden = true;
    loginSection.hidden = false;
    setFieldError(keyInput, message || "");
    document.title = "Sign in · Agent console";
    keyInput.focus();
  }

  /** A request with the key; a 401 anywhere signs out with the server's reason. */
  async function call(path, options) {
    const response = await api(path, Object.assign({ key }, options || {}));
    if (response.status === 401) {
      showLogin((response.data && response.data.message) || "Your API key is not valid any more.");
      throw new Error("unauthorized");
    }
    return response;
  }

  async function signIn(candidate) {
    const { status, data } = await api("/api/v1/agents/me", { key: candidate });
    if (status !== 200) {
      return (data && data.message) || "Could not sign in (HTTP " + status + ").";
    }
    key = candidate;
    try {
      sessionStorage.setItem(KEY_STORAGE, candidate);
    } catch (_) {
      /* the key then lives only in this page */
    }
    $("agent-name").textContent = data.name;
    $("who").hidden = false;
    loginSection.hidden = true;
    consoleSection.hidden = false;
    keyInput.value = "";
    setFieldError(keyInput, "");
    document.title = "Escalations · Agent console";
    if (!data.scopes.includes("escalations:write")) {
      replyStatus.className = "notice warn";
      replyStatus.textContent = "Your key can read the queue but not reply (it lacks escalations:write).";
    }
    await vocabulary; // the labels of reasons, priorities and channels
    await loadQueue();
    $("queue-title").focus();
    return "";
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = keyInput.value.trim();
    if (!candidate) {
      setFieldError(keyInput, "Enter your API key");
      keyInput.focus();
      return;
    }
    $("sign-in").disabled = true;
    try {
      const problem = await signIn(candidate);
      if (problem) {
        setFieldError(keyInput, problem);
        keyInput.focus();
      }
    } catch (_) {
      setFieldError(keyInput, "Could not reach the server. Try again.");
    } finally {
      $("sign-in").disabled = false;
    }
  });

  $("sign-out").addEventListener("click", () => showLogin(""));

  /* ------------------------------------------------------------------ the queue */

  function queueItem(item) {
    const who = item.customer.name || item.customer.email || item.customer.phone || "Unknown customer";
    const due = item.overdue ? "SLA overdue by " + formatRelative(item.sla_due_at).replace(" ago", "") : "SLA due " + formatRelative(item.sla_due_at);
    const current = selected && selected.conversationId === item.conversation_id;
    const button = el(
      "button",
      {
        type: "button",
        class: "queue-item" + (item.overdue ? " overdue" : ""),
        "aria-current": current ? "true" : null,
        "data-ticket": item.ticket_id || "",
        onclick: () => select(item.ticket_id, item.conversation_id),
      },
      el(
        "span",
        { class: "row" },
        el("span", { class: "ticket" }, item.ticket_id || "no ticket"),
        badge("p", item.priority, label(PRIORITIES, item.priority)),
        el("span", { class: "badge ch" }, label(CHANNELS, item.channel)),
        el("span", {}, label(REASONS, item.reason))
      ),
      el("span", { class: "row" }, el("strong", {}, who), item.subject ? "· " + item.subject : ""),
      el("span", { class: "preview" }, item.last_customer_message || ""),
      el(
        "span",
        { class: "due" },
        el("time", { datetime: item.sla_due_at, title: formatDateTime(item.sla_due_at) }, due),
        " · waiting since " + formatDateTime(item.created_at)
      )
    );
    return el("li", {}, button);
  }

  async function loadQueue() {
    clearTimeout(queueTimer);
    try {
      const { status, data } = await call("/api/v1/escalations");
      if (status === 200) {
        const focusedTicket = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.ticket : null;
        queueList.replaceChildren(...data.escalations.map(queueItem));
        if (!data.escalations.length) queueList.append(el("li", { class: "empty" }, "No open escalations. Nice work."));
        $("queue-count").textContent = String(data.count);
        $("queue-status").textContent = "";
        $("queue-status").className = "notice";
        if (focusedTicket) {
          const again = queueList.querySelector('[data-ticket="' + CSS.escape(focusedTicket) + '"]');
          if (again) again.focus();
        }
      } else if (status === 403) {
        $("queue-status").className = "notice bad";
        $("queue-status").textContent = (data && data.message) || "Your key may not read the queue.";
      } else {
        $("queue-status").className = "notice warn";
        $("queue-status").textContent = "Could not load the queue (HTTP " + status + "); retrying.";
      }
    } catch (error) {
      if (error.message === "unauthorized") return;
      $("queue-status").className = "notice warn";
      $("queue-status").textContent = "Connection problem; retrying.";
    }
    queueTimer = setTimeout(loadQueue, QUEUE_INTERVAL_MS);
  }

  $("refresh-queue").addEventListener("click", () => {
    loadQueue();
    if (selected) loadConversation(false);
  });

  /* ------------------------------------------------------------------ one conversation */

  function select(ticketId, conversationId) {
    selected = { ticketId, conversationId };
    lastConversationJson = "";
    reply.value = "";
    setFieldError(reply, "");
    replyStatus.textContent = "";
    replyStatus.className = "notice";
    for (const button of queueList.querySelectorAll(".queue-item")) {
      if (button.dataset.ticket === (ticketId || "")) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    loadConversation(true);
  }

  async function loadConversation(moveFocus) {
    clearTimeout(conversationTimer);
    if (!selected) return;
    const wanted = selected.conversationId;
    try {
      const { status, data } = await call("/api/v1/conversations/" + encodeURIComponent(wanted));
      if (!selected || selected.conversationId !== wanted) return;
      if (status === 200) {
        const json = JSON.stringify(data);
        if (json !== lastConversationJson) {
          lastConversationJson = json;
          renderConversation(data);
        }
        if (moveFocus) $("conversation-title").focus();
      } else {
        $("conversation-title").textContent = "Could not open the conversation";
        $("conversation-empty").textContent = (data && data.message) || "HTTP " + status;
        $("conversation-empty").hidden = false;
        $("conversation-body").hidden = true;
      }
    } catch (error) {
      if (error.message === "unauthorized") return;
    }
    conversationTimer = setTimeout(() => loadConversation(false), CONVERSATION_INTERVAL_MS);
  }

  function renderConversation(data) {
    const current = data.conversations.find((c) => c.id === data.conversation_id);
    if (current && selected) selected.channel = current.channel; // for the reply's outcome wording
    const others = data.conversations.filter((c) => c.id !== data.conversation_id);
    const ticket = current.ticket;
    const open = current.escalations.filter((e) => e.status === "open").pop();

    $("conversation-title").textContent =
      (ticket ? ticket.ticket_id + " · " : "") + (current.subject || (ticket && ticket.subject) || "Conversation");
    $("conversation-empty").hidden = true;
    $("conversation-body").hidden = false;

    const c = data.customer;
    const channels = [...new Set(data.conversations.map((conv) => label(CHANNELS, conv.channel)))];
    $("customer-card").replaceChildren(
      el("div", {}, el("span", {}, "Customer "), el("strong", {}, c.name || "—")),
      el("div", {}, el("span", {}, "Email "), c.email || "—"),
      el("div", {}, el("span", {}, "Phone "), c.phone || "—"),
      el("div", {}, el("span", {}, "Plan "), c.plan || "—"),
      el("div", {}, el("span", {}, "Channels "), channels.join(", "))
    );

    const line = $("escalation-line");
    if (open) {
      line.className = "notice warn";
      line.replaceChildren(
        el("strong", {}, "Waiting for a human: " + label(REASONS, open.reason)),
        " · priority " + label(PRIORITIES, open.priority).toLowerCase() + " · SLA due " + formatDateTime(open.sla_due_at) + " (" + formatRelative(open.sla_due_at) + ")"
      );
    } else {
      const last = current.escalations[current.escalations.length - 1];
      line.className = "notice ok";
      line.textContent = last
        ? "Resolved by " + (last.resolved_by || "someone") + " (" + label({}, last.resolution_action || "") + ") " +
          formatDateTime(last.resolved_at) + " · conversation " + current.status
        : "Not escalated · conversation " + current.status;
    }
    replyForm.hidden = !open;

    renderThread($("thread"), current.messages, "agent");

    const kb = $("kb");
    const articles = data.conversations.flatMap((conv) =>
      conv.kb_articles.map((a) => Object.assign({ channel: conv.channel, current: conv.id === current.id }, a))
    );
    kb.replaceChildren(
      ...articles
        .filter((a) => a.current)
        .concat(articles.filter((a) => !a.current))
        .map((a) =>
          el(
            "li",
            { "data-article-id": a.article_id },
            el("strong", {}, a.title),
            " ",
            el("code", {}, a.article_id),
            a.current ? "" : " (" + label(CHANNELS, a.channel) + " conversation)",
            a.query ? el("div", { class: "q" }, "searched for “" + a.query + "”") : ""
          )
        )
    );
    if (!articles.length) kb.append(el("li", { class: "empty" }, "The AI did not search the knowledge base here."));

    const history = $("history");
    const openIds = new Set([...history.querySelectorAll("details[open]")].map((d) => d.dataset.conversationId));
    history.replaceChildren(
      ...others
        .slice()
        .reverse()
        .map((conv) => {
          const list = el("ol", { class: "thread" });
          renderThread(list, conv.messages, "agent");
          return el(
            "details",
            { class: "history", "data-conversation-id": conv.id, open: openIds.has(conv.id) },
            el(
              "summary",
              {},
              el("span", { class: "badge ch" }, label(CHANNELS, conv.channel)),
              el("strong", {}, conv.ticket ? conv.ticket.ticket_id : "no ticket"),
              conv.subject ? " " + conv.subject : "",
              badge("s", conv.status, label({}, conv.status)),
              el("span", { class: "q" }, formatDateTime(conv.started_at) + " · " + conv.messages.length + " messages")
            ),
            list
          );
        })
    );
    if (!others.length) history.append(el("p", { class: "empty" }, "None: this is the customer's only conversation."));

    const audit = $("audit");
    audit.replaceChildren(
      ...data.human_actions.map((a) =>
        el(
          "li",
          {},
          formatDateTime(a.created_at) + " · " + a.agent_name + " · " + label({}, a.action) +
            (a.detail && a.detail.action ? " (" + a.detail.action + ", " + (a.detail.outcome || "") + ")" : "")
        )
      )
    );
    if (!data.human_actions.length) audit.append(el("li", {}, "Nothing yet."));
  }

  /* ------------------------------------------------------------------ replying */

  /** What to tell the agent after a resolution, from what actually happened to the reply. */
  function replyOutcome(httpStatus, delivery) {
    const channel = selected && selected.channel ? label(CHANNELS, selected.channel) : "this";
    if (httpStatus === 202 || !delivery || delivery === "pending") {
      return { tone: "warn", text: "Accepted; the reply is still being sent (its status shows in the thread)." };
    }
    if (delivery === "delivered" || delivery === "read") {
      return { tone: "ok", text: "Reply delivered to the customer." };
    }
    if (delivery === "sent" || delivery === "queued") {
      return { tone: "ok", text: "Reply sent to the customer." };
    }
    if (delivery === "not_configured") {
      return {
        tone: "bad",
        text:
          "The reply was recorded but NOT sent: the " + channel +
          " channel is not configured on this server. Reach the customer another way.",
      };
    }
    return {
      tone: "bad",
      text: "The reply could not be delivered (" + label(DELIVERY, delivery).toLowerCase() + "). Reach the customer another way.",
    };
  }

  let pendingAction = "resume_ai";
  for (const id of ["resume-ai", "close"]) {
    $(id).addEventListener("click", (event) => {
      pendingAction = event.currentTarget.value;
    });
  }

  replyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = (event.submitter && event.submitter.value) || pendingAction;
    const text = reply.value.trim();
    if (!text) {
      setFieldError(reply, "Write the reply the customer will receive");
      reply.focus();
      return;
    }
    setFieldError(reply, "");
    if (!selected || !selected.ticketId) return;
    const buttons = replyForm.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    replyStatus.className = "notice";
    replyStatus.textContent = "Sending…";
    try {
      const path = "/api/v1/escalations/" + encodeURIComponent(selected.ticketId) + "/resolve";
      const { status, data } = await call(path, { method: "POST", body: { reply: text, action } });
      if (status === 200 || status === 202) {
        reply.value = "";
        const outcome = replyOutcome(status, data && data.delivery_status);
        replyStatus.className = "notice " + outcome.tone;
        replyStatus.textContent =
          outcome.text + " " +
          (action === "close" ? "The conversation is closed." : "The AI is handling the conversation again.");
      } else if (status === 409) {
        replyStatus.className = "notice bad";
        replyStatus.textContent = "This escalation was already resolved (perhaps by someone else). Nothing was sent.";
      } else if (status === 422 && data && data.detail) {
        setFieldError(reply, data.detail.map((d) => d.message).join("; "));
        replyStatus.textContent = "";
      } else {
        replyStatus.className = "notice bad";
        replyStatus.textContent = (data && data.message) || "Could not send the reply (HTTP " + status + ").";
      }
    } catch (error) {
      if (error.message !== "unauthorized") {
        replyStatus.className = "notice bad";
        replyStatus.textContent = "Connection problem: the reply may not have been sent. Check the conversation.";
      }
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
    lastConversationJson = "";
    await Promise.all([loadQueue(), loadConversation(false)]);
    // The form hides once nothing waits for a human: keep keyboard focus on the outcome.
    if (replyForm.hidden) replyStatus.focus();
  });

  /* ------------------------------------------------------------------ start */

  const existing = storedKey();
  if (existing) {
    signIn(existing)
      .then((problem) => {
        if (problem) showLogin(problem);
      })
      .catch(() => showLogin("Could not reach the server. Try again."));
  } else {
    showLogin("");
  }
})();
