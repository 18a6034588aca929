/* Help-article suggestions on the support form: as the customer types the subject, matching
 * articles from GET /api/v1/help/suggest (debounced). What happens to them is counted through
 * POST /api/v1/help/events: shown, opened, and — when the page is left after opening one without
 * sending the form — a deflection. */
"use strict";

(function () {
  const { api, el } = window.CRM;
  const subject = document.getElementById("subject");
  const box = document.getElementById("suggestions");
  const list = box.querySelector("ul");
  const DEBOUNCE_MS = 300;
  let timer = null;
  let asked = "";
  let opened = false;
  let sent = false;
  let deflectionReported = false;

  function report(event, slug) {
    const body = JSON.stringify(slug ? { event, slug } : { event });
    if (event === "deflected" && navigator.sendBeacon) {
      // The page is going away: a beacon survives it.
      navigator.sendBeacon("/api/v1/help/events", new Blob([body], { type: "application/json" }));
      return;
    }
    api("/api/v1/help/events", { method: "POST", body: slug ? { event, slug } : { event } }).catch(() => {});
  }

  function show(articles) {
    if (!articles.length) {
      box.hidden = true;
      list.replaceChildren();
      return;
    }
    list.replaceChildren(
      ...articles.map((article) =>
        el(
          "li",
          {},
          el(
            "a",
            {
              href: article.url,
              target: "_blank",
              rel: "noopener",
              "data-slug": article.slug,
              onclick: () => {
                opened = true;
                report("opened", article.slug);
              },
            },
            article.title
          ),
          article.summary ? el("span", { class: "hint" }, " — " + article.summary) : null
        )
      )
    );
    box.hidden = false;
    report("shown");
  }

  async function lookUp() {
    const query = subject.value.trim().replace(/\s+/g, " ");
    if (query === asked) return;
    asked = query;
    if (query.length < 3) {
      show([]);
      return;
    }
    try {
      const { status, data } = await api("/api/v1/help/suggest?q=" + encodeURIComponent(query.slice(0, 200)));
      // An answer to an older query (the customer kept typing) is dropped.
      if (status === 200 && data && query === asked) show(data.articles || []);
    } catch (_) {
      /* suggestions are a convenience: the form works without them */
    }
  }

  subject.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(lookUp, DEBOUNCE_MS);
  });

  // support.js announces a created ticket: a suggestion opened before that is no deflection.
  document.addEventListener("crm:ticket-created", () => {
    if (opened && !sent) report("form_sent");
    sent = true;
  });

  window.addEventListener("pagehide", () => {
    if (opened && !sent && !deflectionReported) {
      deflectionReported = true;
      report("deflected");
    }
  });
})();
