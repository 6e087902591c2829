// Interlock console: the little behaviour that plain HTML cannot give.
"use strict";

// A table row with data-href opens on click (its main link stays the keyboard way in).
document.addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-href]");
  if (!row || event.target.closest("a, button, input, select, textarea")) return;
  if (event.metaKey || event.ctrlKey) window.open(row.dataset.href, "_blank");
  else window.location.assign(row.dataset.href);
});

// A decision is sent once: a second click while the first is on its way would be a 409.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.hasAttribute("data-once")) return;
  if (form.dataset.sent) { event.preventDefault(); return; }
  form.dataset.sent = "1";
  setTimeout(() => form.querySelectorAll("button").forEach((b) => { b.disabled = true; }), 0);
});

// The inbox refreshes itself while it is visible, so new approvals appear and decided
// ones leave without a reload.
const inbox = document.querySelector("[data-refresh]");
if (inbox) {
  const every = Number(inbox.dataset.refresh) * 1000;
  const refresh = async () => {
    if (document.visibilityState !== "visible") return;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!response.ok || response.redirected) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const selector of ["[data-refresh]", ".nav", ".page-head .muted"]) {
        const fresh = doc.querySelector(selector);
        const stale = document.querySelector(selector);
        if (fresh && stale && fresh.innerHTML !== stale.innerHTML) stale.innerHTML = fresh.innerHTML;
      }
    } catch (_) { /* offline for a moment: try again next time */ }
  };
  setInterval(refresh, every);
}
