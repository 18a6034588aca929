/* The agent console's dashboard: the figures of the last day, week or month
 * (GET /api/v1/reports/summary) and charts of their time series (GET /api/v1/reports/series),
 * drawn with Chart.js (vendored: /static/vendor/chart.umd.min.js). Every chart has a one-line text
 * summary and its data as a table. Uses the console's signed-in requests (window.CRM.agentConsole). */
"use strict";

(function () {
  const { el, label, CHANNELS, REASONS, CATEGORIES, vocabulary } = window.CRM;
  const $ = (id) => document.getElementById(id);

  const nav = $("console-nav");
  const queueView = $("console");
  const view = $("dashboard");
  const stats = $("dashboard-stats");
  const status = $("dashboard-status");
  const windowLine = $("dashboard-window");
  const switches = Array.from(view.querySelectorAll("[data-window]"));
  const WINDOW_NAMES = { day: "Last day", week: "Last week", month: "Last month" };
  // Colours with enough contrast on white; each series is also named in the legend and the table.
  const COLOURS = { blue: "#2346c7", green: "#1b7f3b", amber: "#a35d00", red: "#b3261e", grey: "#5f6b7a", purple: "#6b3fa0" };

  const consoleApi = () => window.CRM.agentConsole;
  let current = "day";
  let loading = 0;
  const charts = {};

  /* ------------------------------------------------------------------ formatting */

  const count = (n) => String(n);
  const percent = (rate) => (rate === null || rate === undefined ? "—" : (rate * 100).toFixed(1) + "%");
  const signed = (v) => (v === null || v === undefined ? "—" : (v > 0 ? "+" : "") + v.toFixed(2));
  const money = (v) => (v === null || v === undefined ? "—" : "$" + v.toFixed(4));

  /** `45 s`, `12.5 min`, `3.2 h` (the daily report's email uses the same steps). */
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 120) return seconds.toFixed(0) + " s";
    if (seconds < 7200) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  const hourLabel = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
  const dayLabel = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
  const fullLabel = new Intl.DateTimeFormat("en-GB", { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" });

  /* ------------------------------------------------------------------ views */

  function say(tone, message) {
    status.className = "notice" + (tone ? " " + tone : "");
    status.textContent = message;
  }

  function show(which) {
    const dashboard = which === "dashboard";
    view.hidden = !dashboard;
    queueView.hidden = dashboard;
    $("show-dashboard").setAttribute("aria-pressed", String(dashboard));
    $("show-queue").setAttribute("aria-pressed", String(!dashboard));
    document.title = (dashboard ? "Dashboard" : "Escalations") + " · Agent console";
    history.replaceState(null, "", location.pathname + location.search + (dashboard ? "#dashboard" : ""));
    if (dashboard) {
      $("dashboard-title").focus();
      load(current).catch(problem);
    }
  }

  function problem(error) {
    if (error && error.message === "unauthorized") return; // the sign-in form is showing
    say("bad", "Could not load the figures; try again.");
  }

  $("show-queue").addEventListener("click", () => show("queue"));
  $("show-dashboard").addEventListener("click", () => show("dashboard"));
  for (const button of switches) {
    button.addEventListener("click", () => {
      current = button.dataset.window;
      for (const other of switches) other.setAttribute("aria-pressed", String(other === button));
      load(current).catch(problem);
    });
  }

  document.addEventListener("crm:signed-in", () => {
    nav.hidden = false;
    show(location.hash === "#dashboard" ? "dashboard" : "queue");
  });
  // Signed out (agent.js shows the sign-in form): the dashboard goes with the console.
  new MutationObserver(() => {
    if (!$("login-section").hidden) {
      nav.hidden = true;
      view.hidden = true;
    }
  }).observe($("login-section"), { attributes: true, attributeFilter: ["hidden"] });

  /* ------------------------------------------------------------------ loading */

  async function load(windowName) {
    const ticket = ++loading;
    delete view.dataset.loadedWindow;
    view.setAttribute("aria-busy", "true");
    say("", "Loading " + WINDOW_NAMES[windowName].toLowerCase() + "…");
    const query = "?window=" + encodeURIComponent(windowName);
    const [summary, series] = await Promise.all([
      consoleApi().call("/api/v1/reports/summary" + query),
      consoleApi().call("/api/v1/reports/series" + query),
      vocabulary,
    ]);
    if (ticket !== loading) return; // a newer choice is on its way
    view.removeAttribute("aria-busy");
    if (summary.status !== 200 || series.status !== 200) {
      const failed = summary.status !== 200 ? summary : series;
      say("bad", "Could not load the figures: " + ((failed.data && failed.data.message) || "HTTP " + failed.status));
      return;
    }
    render(windowName, summary.data, series.data);
    say("", "");
    view.dataset.loadedWindow = windowName; // for tests and scripts: the figures shown are this window's
  }

  /* ------------------------------------------------------------------ figures */

  function stat(name, title, shown, value, detail, empty) {
    return el(
      "div",
      { class: "stat" + (empty ? " empty" : ""), "data-figure": name, "data-value": value === null || value === undefined ? "" : value },
      el("dt", {}, title),
      el("dd", {}, shown, detail ? el("span", { class: "detail" }, detail) : null)
    );
  }

  function render(windowName, s, series) {
    const o = s.outcomes;
    const m = s.model;
    windowLine.textContent =
      WINDOW_NAMES[windowName] + ": " + fullLabel.format(new Date(s.since)) + " to " + fullLabel.format(new Date(s.until)) +
      " UTC, by " + series.bucket + ".";
    stats.replaceChildren(
      stat("conversations", "Conversations", count(s.conversations), s.conversations, "started"),
      stat("closed", "Closed", count(o.closed), o.closed,
        o.resolved_by_ai + " by the AI, " + o.resolved_by_human + " by a person, " + o.abandoned + " abandoned"),
      stat("resolution_rate", "Resolution rate", percent(o.resolution_rate), o.resolution_rate,
        o.closed ? "resolved of closed" : "nothing closed yet"),
      stat("automation_rate", "Automation rate", percent(o.automation_rate), o.automation_rate,
        o.closed ? "resolved by the AI of closed" : "nothing closed yet"),
      stat("open_with_human", "With a person now", count(s.open_with_human), s.open_with_human, "open escalated conversations"),
      stat("escalations", "Escalations", count(s.escalations), s.escalations, "created"),
      stat("sla_breached", "SLA breaches", count(s.sla.breached), s.sla.breached, "of " + s.sla.due + " deadlines passed"),
      s.csat_average === null
        ? stat("csat", "CSAT", "No ratings", null, "nobody rated a conversation in this period", true)
        : stat("csat", "CSAT", s.csat_average.toFixed(2) + " / 5", s.csat_average, count(s.csat_ratings) + " ratings"),
      stat("gaps_closed", "Knowledge gaps closed", count(s.gaps_closed), s.gaps_closed, "answers approved into the KB"),
      stat("first_response_p50", "First response, median", duration(s.first_response.p50_seconds),
        s.first_response.p50_seconds, s.first_response.count + " conversations"),
      stat("first_response_p95", "First response, 95th percentile", duration(s.first_response.p95_seconds),
        s.first_response.p95_seconds),
      stat("human_first_response_p50", "A person's first reply, median", duration(s.human_first_response.p50_seconds),
        s.human_first_response.p50_seconds, s.human_first_response.count + " escalations answered"),
      stat("average_sentiment", "Sentiment", signed(s.sentiment.average), s.sentiment.average,
        "mean of " + s.sentiment.points + " turns, −1 to +1"),
      stat("cost_per_resolution", "Model cost per resolution", money(m.cost_per_resolution_usd), m.cost_per_resolution_usd,
        money(m.cost_usd) + " for " + (m.prompt_tokens + m.completion_tokens) + " tokens (estimate)")
    );
    renderCharts(series, s);
    renderQuestions(s.unanswered_questions);
  }

  function renderQuestions(questions) {
    const list = $("unanswered");
    list.replaceChildren(
      ...questions.map((q) =>
        el("li", {}, el("strong", {}, q.count + " × "), "“" + q.text + "”",
          q.category ? el("span", { class: "hint" }, " (" + label(CATEGORIES, q.category) + ")") : null)
      )
    );
    if (!questions.length) list.append(el("li", { class: "empty" }, "None in this period."));
  }

  /* ------------------------------------------------------------------ charts */

  function table(id, headers, rows) {
    $(id).replaceChildren(
      el("table", {},
        el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((cell, i) => el(i ? "td" : "th", i ? {} : { scope: "row" }, cell))))))
    );
  }

  function draw(name, config, summary) {
    $("chart-" + name + "-summary").textContent = summary;
    $("chart-" + name).setAttribute("aria-label", "Chart: " + summary);
    if (charts[name]) charts[name].destroy();
    if (typeof window.Chart !== "function") return; // the library did not load: the tables still tell
    config.options = Object.assign(
      { responsive: true, maintainAspectRatio: false, animation: false, plugins: { legend: { position: "bottom" } } },
      config.options || {}
    );
    charts[name] = new window.Chart($("chart-" + name), config);
  }

  function renderCharts(series, s) {
    const points = series.points;
    const fmt = series.bucket === "hour" ? hourLabel : dayLabel;
    const labels = points.map((p) => fmt.format(new Date(p.start)));
    const bar = (labelText, data, colour, stack) => ({ label: labelText, data, backgroundColor: colour, stack });
    const line = (labelText, data, colour) => ({ label: labelText, data, borderColor: colour, backgroundColor: colour, spanGaps: true, tension: 0.2 });

    const busiest = points.reduce((best, p, i) => (p.conversations > (best ? best.p.conversations : 0) ? { p, i } : best), null);
    draw("volume", {
      type: "bar",
      data: { labels, datasets: [bar("Conversations", points.map((p) => p.conversations), COLOURS.blue), bar("Escalations", points.map((p) => p.escalations), COLOURS.amber)] },
      options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    }, s.conversations + " conversations and " + s.escalations + " escalations" +
      (busiest ? "; busiest: " + labels[busiest.i] + " (" + busiest.p.conversations + " conversations)." : "."));
    table("chart-volume-table", ["Period (UTC)", "Conversations", "Escalations", "SLA breaches"],
      points.map((p, i) => [labels[i], count(p.conversations), count(p.escalations), count(p.sla_breached)]));

    const o = s.outcomes;
    draw("outcomes", {
      type: "bar",
      data: { labels, datasets: [
        bar("Resolved by the AI", points.map((p) => p.resolved_by_ai), COLOURS.green, "o"),
        bar("Resolved by a person", points.map((p) => p.resolved_by_human), COLOURS.blue, "o"),
        bar("Abandoned", points.map((p) => p.abandoned), COLOURS.grey, "o"),
      ] },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
    }, o.closed + " closed: " + o.resolved_by_ai + " resolved by the AI, " + o.resolved_by_human + " by a person, " +
      o.abandoned + " abandoned; resolution rate " + percent(o.resolution_rate) + ", automation rate " + percent(o.automation_rate) + ".");
    table("chart-outcomes-table", ["Period (UTC)", "By the AI", "By a person", "Abandoned"],
      points.map((p, i) => [labels[i], count(p.resolved_by_ai), count(p.resolved_by_human), count(p.abandoned)]));

    const reasons = Object.entries(s.escalations_by_reason);
    draw("reasons", {
      type: "bar",
      data: { labels: reasons.map(([r]) => label(REASONS, r)), datasets: [bar("Escalations", reasons.map(([, n]) => n), COLOURS.amber)] },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
    }, reasons.length ? "Most common: " + reasons.slice(0, 3).map(([r, n]) => label(REASONS, r) + " (" + n + ")").join(", ") + "." : "No escalations in this period.");
    table("chart-reasons-table", ["Reason", "Escalations"], reasons.map(([r, n]) => [label(REASONS, r), count(n)]));

    const channels = Array.from(new Set([...Object.keys(s.conversations_by_channel), ...Object.keys(s.outcomes_by_channel)]));
    const closedIn = (c) => (s.outcomes_by_channel[c] || { closed: 0, resolution_rate: null, automation_rate: null });
    draw("channels", {
      type: "bar",
      data: { labels: channels.map((c) => label(CHANNELS, c)), datasets: [
        bar("Conversations", channels.map((c) => s.conversations_by_channel[c] || 0), COLOURS.blue),
        bar("Closed", channels.map((c) => closedIn(c).closed), COLOURS.green),
      ] },
      options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    }, channels.length ? channels.map((c) => label(CHANNELS, c) + ": " + (s.conversations_by_channel[c] || 0) + " conversations, automation " + percent(closedIn(c).automation_rate)).join("; ") + "." : "No conversations in this period.");
    table("chart-channels-table", ["Channel", "Conversations", "Closed", "Resolution rate", "Automation rate"],
      channels.map((c) => [label(CHANNELS, c), count(s.conversations_by_channel[c] || 0), count(closedIn(c).closed), percent(closedIn(c).resolution_rate), percent(closedIn(c).automation_rate)]));

    draw("sentiment", {
      type: "line",
      data: { labels, datasets: [line("Average sentiment", points.map((p) => p.average_sentiment), COLOURS.purple)] },
      options: { scales: { y: { min: -1, max: 1 } } },
    }, s.sentiment.points ? "Average " + signed(s.sentiment.average) + " over " + s.sentiment.points + " turns (−1 negative to +1 positive)." : "No sentiment recorded in this period.");
    table("chart-sentiment-table", ["Period (UTC)", "Average sentiment"], points.map((p, i) => [labels[i], signed(p.average_sentiment)]));

    const fr = s.first_response;
    draw("response", {
      type: "line",
      data: { labels, datasets: [
        line("Median (s)", points.map((p) => p.first_response_p50_seconds), COLOURS.blue),
        line("95th percentile (s)", points.map((p) => p.first_response_p95_seconds), COLOURS.red),
      ] },
      options: { scales: { y: { beginAtZero: true } } },
    }, fr.count ? "Median first response " + duration(fr.p50_seconds) + ", 95th percentile " + duration(fr.p95_seconds) + " (" + fr.count + " conversations)." : "No first responses in this period.");
    table("chart-response-table", ["Period (UTC)", "Median", "95th percentile"],
      points.map((p, i) => [labels[i], duration(p.first_response_p50_seconds), duration(p.first_response_p95_seconds)]));
  }
})();
