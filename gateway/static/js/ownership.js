/* Who answers the conversation shown: claim, release, take over from the AI, give to a colleague,
 * hand back to the AI with a note, close; and the live stream of the customer's new messages
 * (server-sent events read with fetch, because EventSource cannot send the API key). */
"use strict";

(function () {
  const { el, setFieldError } = window.CRM;
  const $ = (id) => document.getElementById(id);
  const consoleApi = () => window.CRM.agentConsole;

  let state = null; // {conversationId, status, ownership, assignee, me}
  let stream = null; // {conversationId, controller}

  /* ------------------------------------------------------------------ the panel */

  function describe(s) {
    if (s.ownership === "closed") return "Closed: nobody answers it any more.";
    if (s.ownership === "ai") return "The AI is answering this conversation.";
    if (s.ownership === "waiting") return "Waiting for someone to claim it.";
    return s.assignee === s.me ? "You own this conversation: the AI stays quiet until you hand it back." : "Owned by " + s.assignee + ".";
  }

  function show(s) {
    const mine = s.ownership === "human" && s.assignee === s.me;
    const held = s.ownership === "human" && !mine;
    $("ownership-line").replaceChildren(el("strong", {}, describe(s)));
    $("claim").hidden = s.ownership !== "waiting";
    $("take-over").hidden = s.ownership !== "ai";
    $("release").hidden = !mine;
    $("close-conversation").hidden = !(mine || s.ownership === "waiting");
    $("assign-form").hidden = !(s.ownership === "waiting" || s.ownership === "human");
    $("hand-back-form").hidden = !(mine || s.ownership === "waiting");
    if (held) {
      const status = $("ownership-status");
      if (!status.textContent) say("warn", "Only " + s.assignee + " replies here; ask them, or a lead can assign it to you.");
    }
  }

  function say(tone, message) {
    const node = $("ownership-status");
    node.className = "notice" + (tone ? " " + tone : "");
    node.textContent = message;
  }

  const DONE = {
    claim: "It is yours: reply as often as you need.",
    take_over: "You took it over: the AI will not answer it.",
    release: "Released: it waits in the queue for anyone.",
    assign: "Assigned.",
    hand_back: "Handed back: the AI answers the customer's next message.",
    close: "Closed.",
  };

  async function act(action, path, body, button) {
    const api = consoleApi();
    const selected = api && api.selected();
    if (!selected) return false;
    button.disabled = true;
    say("", "Working…");
    try {
      const url = "/api/v1/conversations/" + encodeURIComponent(selected.conversationId) + "/" + path;
      const { status, data } = await api.call(url, { method: "POST", body });
      if (status === 200 || status === 202) {
        say("ok", action === "assign" && data && data.assignee ? "Assigned to " + data.assignee + "." : DONE[action]);
        await api.refresh();
        return true;
      }
      if (status === 409) say("bad", (data && data.message) || "Not possible now.");
      else if (status === 404 || status === 422) say("bad", (data && data.message) || "Check the form.");
      else say("bad", (data && data.message) || "Could not do that (HTTP " + status + ").");
      await api.refresh();
    } catch (error) {
      if (error.message !== "unauthorized") say("bad", "Connection problem: check the conversation before trying again.");
    } finally {
      button.disabled = false;
    }
    return false;
  }

  $("claim").addEventListener("click", (e) => act("claim", "claim", undefined, e.currentTarget));
  $("take-over").addEventListener("click", (e) => act("take_over", "take-over", undefined, e.currentTarget));
  $("release").addEventListener("click", (e) => act("release", "release", undefined, e.currentTarget));
  $("close-conversation").addEventListener("click", (e) => act("close", "close", undefined, e.currentTarget));

  $("assign-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = $("assign-to");
    const to = field.value.trim();
    if (!to) {
      setFieldError(field, "Write your colleague's name");
      field.focus();
      return;
    }
    setFieldError(field, "");
    if (await act("assign", "assign", { to }, $("assign"))) field.value = "";
  });

  $("hand-back-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = $("hand-back-note");
    const note = field.value.trim();
    if (note.length > 5000) {
      setFieldError(field, "A note is at most 5,000 characters (this one has " + note.length + ")");
      field.focus();
      return;
    }
    setFieldError(field, "");
    if (await act("hand_back", "hand-back", note ? { note } : {}, $("hand-back"))) field.value = "";
  });

  /* ------------------------------------------------------------------ the live stream */

  function stopStream() {
    if (stream) stream.controller.abort();
    stream = null;
    $("live").hidden = true;
  }

  let refreshTimer = null;
  function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => consoleApi() && consoleApi().refresh(), 150);
  }

  /** Read `text/event-stream` from fetch; every event reloads the conversation; reconnect on a drop. */
  async function listen(conversationId, controller) {
    let lastId = null;
    while (!controller.signal.aborted) {
      try {
        const headers = { Accept: "text/event-stream", Authorization: "Bearer " + consoleApi().key() };
        if (lastId !== null) headers["Last-Event-ID"] = lastId;
        const response = await fetch("/api/v1/conversations/" + encodeURIComponent(conversationId) + "/events", {
          headers,
          signal: controller.signal,
          cache: "no-store",
          credentials: "omit",
        });
        if (!response.ok || !response.body) {
          $("live").hidden = true;
          if (response.status === 401 || response.status === 403 || response.status === 404) return;
        } else {
          $("live").hidden = false;
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              const id = block.split("\n").find((l) => l.startsWith("id: "));
              if (id) lastId = id.slice(4);
              if (block.split("\n").some((l) => l.startsWith("event: "))) refreshSoon();
            }
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      $("live").hidden = true;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  document.addEventListener("crm:conversation", (event) => {
    const s = event.detail;
    if (!state || state.conversationId !== s.conversationId) $("ownership-status").textContent = "";
    state = s;
    show(s);
    // Live while the conversation is with a person (or waiting for one): the AI answers the rest itself.
    const wanted = s.ownership === "human" || s.ownership === "waiting";
    if (!wanted || (stream && stream.conversationId !== s.conversationId)) stopStream();
    if (wanted && !stream) {
      const controller = new AbortController();
      stream = { conversationId: s.conversationId, controller };
      listen(s.conversationId, controller);
    }
  });

  document.addEventListener("crm:signed-out", stopStream);
})();
