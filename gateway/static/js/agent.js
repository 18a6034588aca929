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
  let me = null; // the signed-in person's name (ownership is by name)
  let selected = null; // {ticketId, conversationId}
  let queueTimer = null;
  let conversationTimer = null;
  let lastConversationJson = "";
  let customerId = null; // the customer of the conversation shown
  let pendingMerge = null; // {source, into, reason} once previewed

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
    me = data.name;
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
    if (filterControls.priority.options.length === 1) fillFilterOptions();
    document.dispatchEvent(new CustomEvent("crm:signed-in", { detail: { name: data.name, scopes: data.scopes } }));
    await loadQueue();
    // A notification's link (`/agent?conversation=<id>`) opens that conversation once signed in.
    const linked = new URLSearchParams(location.search).get("conversation");
    if (linked && /^[0-9a-fA-F-]{36}$/.test(linked)) {
      select(null, linked);
      return "";
    }
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
        el("span", {}, label(REASONS, item.reason)),
        el(
          "span",
          { class: "owner", "data-testid": "owner" },
          item.assignee ? (item.assignee === me ? "· yours" : "· " + item.assignee) : "· unassigned"
        )
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

  /* The filters, as the API's query string (the API checks them too: a 422 says what is wrong). */
  const TICKET_SEARCH = /^[A-Za-z0-9-]*$/;
  const filterControls = { priority: $("filter-priority"), channel: $("filter-channel"), reason: $("filter-reason") };

  function fillFilterOptions() {
    const options = (select, map, words) => {
      for (const word of words) select.append(el("option", { value: word }, label(map, word)));
    };
    options(filterControls.priority, PRIORITIES, Object.keys(PRIORITIES).reverse()); // most urgent first
    options(filterControls.channel, CHANNELS, Object.keys(CHANNELS));
    options(filterControls.reason, REASONS, Object.keys(REASONS));
  }

  function queueQuery() {
    const params = new URLSearchParams();
    for (const [name, select] of Object.entries(filterControls)) if (select.value) params.set(name, select.value);
    if ($("filter-breached").checked) params.set("breached", "true");
    const owner = $("filter-owner").value;
    if (owner) params.set(owner, "true"); // mine=true or unassigned=true
    const ticket = $("filter-ticket").value.trim();
    if (ticket) params.set("ticket", ticket);
    const query = params.toString();
    return query ? "?" + query : "";
  }

  function filtering() {
    return queueQuery() !== "";
  }

  /** "1 urgent · 3 high · 2 breached": the priorities that have any, and the breached count. */
  function countsText(counts) {
    if (!counts || !counts.total) return "";
    const parts = Object.entries(counts.by_priority)
      .filter(([, n]) => n > 0)
      .map(([priority, n]) => n + " " + label(PRIORITIES, priority).toLowerCase());
    parts.push(counts.breached + " breached");
    return parts.join(" · ");
  }

  let filterTimer = null;
  function filtersChanged(delay) {
    const ticket = $("filter-ticket");
    if (!TICKET_SEARCH.test(ticket.value.trim())) {
      setFieldError(ticket, "Letters, digits and '-' only, like TKT-0042 or 0042");
      return;
    }
    setFieldError(ticket, "");
    clearTimeout(filterTimer);
    filterTimer = setTimeout(loadQueue, delay);
  }

  for (const select of Object.values(filterControls)) select.addEventListener("change", () => filtersChanged(0));
  $("filter-breached").addEventListener("change", () => filtersChanged(0));
  $("filter-owner").addEventListener("change", () => filtersChanged(0));
  $("filter-ticket").addEventListener("input", () => filtersChanged(300));
  $("queue-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    filtersChanged(0);
  });
  $("clear-filters").addEventListener("click", () => {
    for (const select of Object.values(filterControls)) select.value = "";
    $("filter-breached").checked = false;
    $("filter-owner").value = "";
    $("filter-ticket").value = "";
    filtersChanged(0);
  });

  async function loadQueue() {
    clearTimeout(queueTimer);
    try {
      const { status, data } = await call("/api/v1/escalations" + queueQuery());
      if (status === 200) {
        const focusedTicket = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.ticket : null;
        queueList.replaceChildren(...data.escalations.map(queueItem));
        if (!data.escalations.length) {
          queueList.append(
            el("li", { class: "empty" }, filtering() ? "No open escalations match these filters." : "No open escalations. Nice work.")
          );
        }
        $("queue-count").textContent = String(data.count);
        $("queue-counts").textContent = countsText(data.counts);
        $("queue-status").textContent = "";
        $("queue-status").className = "notice";
        if (focusedTicket) {
          const again = queueList.querySelector('[data-ticket="' + CSS.escape(focusedTicket) + '"]');
          if (again) again.focus();
        }
      } else if (status === 403) {
        $("queue-status").className = "notice bad";
        $("queue-status").textContent = (data && data.message) || "Your key may not read the queue.";
      } else if (status === 422) {
        $("queue-status").className = "notice bad";
        $("queue-status").textContent =
          "Filters not applied: " + ((data && data.detail) || []).map((d) => d.field + ": " + d.message).join("; ");
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
    customerId = null;
    $("merge-status").textContent = "";
    $("gdpr-status").textContent = "";
    $("note").value = "";
    setFieldError($("note"), "");
    $("note-status").textContent = "";
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
    const holder = open ? open.assignee : null;
    if (open) {
      line.className = "notice warn";
      line.replaceChildren(
        el("strong", {}, (holder ? "With a person: " : "Waiting for a human: ") + label(REASONS, open.reason)),
        " · priority " + label(PRIORITIES, open.priority).toLowerCase() +
          (open.responded_at
            ? " · first reply " + formatDateTime(open.responded_at) + " (SLA met)"
            : " · SLA due " + formatDateTime(open.sla_due_at) + " (" + formatRelative(open.sla_due_at) + ")")
      );
    } else {
      const last = current.escalations[current.escalations.length - 1];
      line.className = "notice ok";
      line.textContent = last
        ? "Resolved by " + (last.resolved_by || "someone") + " (" + label({}, last.resolution_action || "") + ") " +
          formatDateTime(last.resolved_at) + " · conversation " + current.status
        : "Not escalated · conversation " + current.status;
    }
    // Only the holder replies; a conversation nobody holds is claimed by replying to it.
    replyForm.hidden = !open || (holder !== null && holder !== me);
    document.dispatchEvent(
      new CustomEvent("crm:conversation", {
        detail: {
          conversationId: current.id,
          status: current.status,
          ownership: current.status === "closed" ? "closed" : open ? (holder ? "human" : "waiting") : "ai",
          assignee: holder,
          me,
        },
      })
    );

    // WhatsApp's 24-hour window: say before sending how a late reply will go out.
    const win = data.whatsapp_window;
    const windowNotice = $("whatsapp-window");
    windowNotice.hidden = !(open && win && !win.open);
    windowNotice.className = "notice " + (win && win.late_reply_via === "undeliverable" ? "bad" : "warn");
    windowNotice.textContent = windowNotice.hidden
      ? ""
      : "The 24-hour WhatsApp window closed" + (win.closes_at ? " at " + formatDateTime(win.closes_at) : "") + "; " +
        ({
          template: "this reply will go as the approved template message (instead of your text), asking the customer to write back.",
          email: "this reply will go by email to " + win.email_to + ".",
          undeliverable: "WhatsApp will refuse this reply (no approved template, no verified email): reach the customer another way.",
        }[win.late_reply_via] || "");

    renderThreadWithNotes($("thread"), current.messages, current.notes);

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
          renderThreadWithNotes(list, conv.messages, conv.notes);
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
    showCustomer(data.customer);
  }

  /* ------------------------------------------------------------------ internal notes */

  function noteItem(note) {
    const forAi = note.kind === "hand_back"; // written when handing back: the AI reads it
    return el(
      "li",
      { class: "msg note", "data-note-id": note.id, "data-role": "note", "data-kind": note.kind || "note" },
      el(
        "div",
        { class: "who" },
        el("span", {}, (forAi ? "Handed back to the AI · " : "Internal note · ") + note.author),
        el(
          "span",
          { class: "internal" },
          forAi ? "Internal — the AI reads it; not sent to the customer" : "Internal — not sent to the customer"
        ),
        el("time", { datetime: note.created_at }, formatDateTime(note.created_at))
      ),
      el("div", { class: "body" }, note.body)
    );
  }

  /** The messages and the team's notes in one list, in time order (notes look different: never sent). */
  function renderThreadWithNotes(list, messages, notes) {
    renderThread(list, messages, "agent");
    const items = [...list.children].map((node, i) => ({ at: messages[i].created_at, node }));
    for (const note of notes || []) items.push({ at: note.created_at, node: noteItem(note) });
    items.sort((a, b) => new Date(a.at) - new Date(b.at));
    list.replaceChildren(...items.map((item) => item.node));
  }

  $("note-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = $("note");
    const text = field.value.trim();
    if (!text || text.length > 5000) {
      setFieldError(field, text ? "A note is at most 5,000 characters (this one has " + text.length + ")" : "Write the note first");
      field.focus();
      return;
    }
    setFieldError(field, "");
    if (!selected) return;
    $("add-note").disabled = true;
    try {
      const path = "/api/v1/conversations/" + encodeURIComponent(selected.conversationId) + "/notes";
      const { status, data } = await call(path, { method: "POST", body: { body: text } });
      if (status === 201) {
        field.value = "";
        say($("note-status"), "ok", "Note added. Only your team can see it.");
        lastConversationJson = "";
        await loadConversation(false);
      } else if (status === 422 && data && data.detail) {
        setFieldError(field, data.detail.map((d) => d.message).join("; "));
      } else {
        say($("note-status"), "bad", "Note not added: " + problem(data, status));
      }
    } catch (error) {
      if (error.message !== "unauthorized") say($("note-status"), "bad", "Connection problem: the note may not have been added.");
    } finally {
      $("add-note").disabled = false;
    }
  });

  /* ------------------------------------------------------------------ the customer record: merge, GDPR */

  function say(node, tone, message) {
    node.className = "notice" + (tone ? " " + tone : "");
    node.textContent = message;
  }

  /** "1 conversation", "2 conversations". */
  function count(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function problem(data, status) {
    return (data && data.message) || "HTTP " + status;
  }

  function showCustomer(customer) {
    if (customer.id === customerId) return;
    customerId = customer.id;
    $("customer-id").textContent = customer.id;
    cancelMerge();
    loadMerges();
  }

  function cancelMerge() {
    pendingMerge = null;
    $("merge-preview-panel").hidden = true;
    $("merge-preview-list").replaceChildren();
  }

  async function loadMerges() {
    const list = $("merges");
    if (!customerId) return;
    const { status, data } = await call("/api/v1/customers/" + encodeURIComponent(customerId) + "/merges");
    if (status !== 200) {
      list.replaceChildren(el("li", {}, "Could not load the merges (" + problem(data, status) + ")."));
      return;
    }
    const now = Date.now();
    list.replaceChildren(
      ...data.merges.map((m) => {
        const undoable = !m.unmerged_at && new Date(m.unmerge_until).getTime() > now;
        return el(
          "li",
          { "data-merge-id": m.id },
          formatDateTime(m.merged_at) + " · " + m.source_customer_id + " merged into " + m.target_customer_id +
            " by " + m.actor + " · " + m.reason +
            (m.unmerged_at ? " · undone by " + m.unmerged_by + " " + formatDateTime(m.unmerged_at) : ""),
          undoable
            ? el("button", { type: "button", class: "link", onclick: () => unmerge(m.id) }, "Unmerge")
            : ""
        );
      })
    );
    if (data.merged_into) list.prepend(el("li", {}, "This record was merged into " + data.merged_into + "."));
    if (!list.children.length) list.append(el("li", {}, "None."));
  }

  $("merge-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const into = $("merge-into").value.trim();
    const reason = $("merge-reason").value.trim();
    setFieldError($("merge-into"), into ? "" : "Enter the id of the customer that remains");
    setFieldError($("merge-reason"), reason ? "" : "Say why these are the same person");
    if (!into || !reason) {
      (into ? $("merge-reason") : $("merge-into")).focus();
      return;
    }
    cancelMerge();
    const path = "/api/v1/customers/" + encodeURIComponent(customerId) + "/merge-preview?into=" + encodeURIComponent(into);
    const { status, data } = await call(path);
    if (status !== 200) {
      setFieldError($("merge-into"), problem(data, status));
      $("merge-into").focus();
      return;
    }
    const who = (side) => side.name || side.email || side.phone || side.id;
    const items = [
      "Moves to " + who(data.target) + ": " + count(data.conversation_ids.length, "conversation") + ", " +
        count(data.ticket_ids.length, "ticket") + ", " + count(data.identifiers, "identifier") + ", " +
        count(data.metric_points, "metric point"),
      count(data.open_workflows, "open conversation") + " will follow the new record",
      ...data.source.identifiers.map((i) => i.type + " " + i.value + (i.verified ? " (verified)" : " (claim)")),
    ];
    if (data.duplicate_identifiers.length) items.push("Kept once: " + data.duplicate_identifiers.join(", "));
    if (data.profile_filled.length) items.push("The remaining record takes: " + data.profile_filled.join(", "));
    for (const conflict of data.conflicts) items.push("Warning: " + conflict);
    $("merge-preview-list").replaceChildren(...items.map((text) => el("li", {}, text)));
    $("merge-preview-panel").hidden = false;
    pendingMerge = { source: customerId, into, reason };
    $("merge-preview-title").focus();
  });

  $("merge-cancel").addEventListener("click", cancelMerge);

  $("merge-confirm").addEventListener("click", async () => {
    if (!pendingMerge) return;
    const { source, into, reason } = pendingMerge;
    $("merge-confirm").disabled = true;
    try {
      const path = "/api/v1/customers/" + encodeURIComponent(source) + "/merge";
      const { status, data } = await call(path, { method: "POST", body: { into, reason } });
      if (status === 200) {
        cancelMerge();
        $("merge-into").value = "";
        $("merge-reason").value = "";
        say($("merge-status"), "ok", "Merged: " + count(data.conversation_ids.length, "conversation") + " moved to " + into + ".");
        lastConversationJson = "";
        await loadConversation(false);
        await loadMerges();
      } else {
        say($("merge-status"), "bad", "Not merged: " + problem(data, status));
      }
    } finally {
      $("merge-confirm").disabled = false;
    }
    $("merge-status").focus();
  });

  async function unmerge(mergeId) {
    const { status, data } = await call("/api/v1/merges/" + encodeURIComponent(mergeId) + "/unmerge", { method: "POST" });
    if (status === 200) {
      say($("merge-status"), "ok", "Unmerged: " + count(data.conversation_ids.length, "conversation") + " went back.");
      lastConversationJson = "";
      await loadConversation(false);
      await loadMerges();
    } else {
      say($("merge-status"), "bad", "Not unmerged: " + problem(data, status));
    }
    $("merge-status").focus();
  }

  $("export-data").addEventListener("click", async () => {
    const { status, data } = await call("/api/v1/customers/" + encodeURIComponent(customerId) + "/export");
    if (status !== 200) {
      say($("gdpr-status"), "bad", "Not exported: " + problem(data, status));
      return;
    }
    const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
    const link = el("a", { href: URL.createObjectURL(blob), download: "customer-" + data.customer_id + ".json" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    say($("gdpr-status"), "ok", "Exported customer-" + data.customer_id + ".json (" + data.messages.length + " messages).");
  });

  $("erase-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("erase-confirm");
    if (input.value.trim() !== customerId) {
      setFieldError(input, "Type the customer id exactly (" + customerId + ") to erase this customer's data");
      input.focus();
      return;
    }
    setFieldError(input, "");
    $("erase-data").disabled = true;
    try {
      const path = "/api/v1/customers/" + encodeURIComponent(customerId) + "/erase";
      const { status, data } = await call(path, { method: "POST", body: { confirm: input.value.trim() } });
      if (status === 200) {
        input.value = "";
        say(
          $("gdpr-status"),
          "ok",
          "Erased: " + count(data.rows.messages, "message") + " redacted, " +
            count(data.workflows_deleted, "workflow execution") + " deleted."
        );
        lastConversationJson = "";
        await Promise.all([loadQueue(), loadConversation(false)]);
      } else {
        say($("gdpr-status"), "bad", "Not erased: " + problem(data, status));
      }
    } finally {
      $("erase-data").disabled = false;
    }
  });

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

  let pendingAction = "reply";
  for (const id of ["send-reply", "resume-ai", "close"]) {
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
    if (!selected || (action !== "reply" && !selected.ticketId)) return;
    const buttons = replyForm.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    replyStatus.className = "notice";
    replyStatus.textContent = "Sending…";
    try {
      const { status, data } =
        action === "reply"
          ? await call("/api/v1/conversations/" + encodeURIComponent(selected.conversationId) + "/replies", {
              method: "POST",
              body: { reply: text },
            })
          : await call("/api/v1/escalations/" + encodeURIComponent(selected.ticketId) + "/resolve", {
              method: "POST",
              body: { reply: text, action },
            });
      if (status === 200 || status === 202) {
        reply.value = "";
        const outcome = replyOutcome(status, data && data.delivery_status);
        replyStatus.className = "notice " + outcome.tone;
        replyStatus.textContent =
          outcome.text + " " +
          (action === "close"
            ? "The conversation is closed."
            : action === "reply"
              ? "The conversation stays with you."
              : "The AI is handling the conversation again.");
      } else if (status === 409) {
        replyStatus.className = "notice bad";
        replyStatus.textContent =
          ((data && data.message) || "This escalation was already resolved (perhaps by someone else).") + " Nothing was sent.";
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

  /* ------------------------------------------------------------------ for saved-replies.js */

  window.CRM.agentConsole = {
    call,
    /** The conversation shown: {ticketId, conversationId}, or null. */
    selected: () => selected,
    /** The signed-in person's name. */
    me: () => me,
    /** The key, for the live stream (fetch with an Authorization header; EventSource cannot send one). */
    key: () => key,
    /** Reload the queue and the conversation shown (after an action, or a live event). */
    refresh: async () => {
      lastConversationJson = "";
      await Promise.all([loadQueue(), loadConversation(false)]);
    },
  };

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
