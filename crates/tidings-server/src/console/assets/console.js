// The console's one script (no library): asks before destructive forms,
// and refreshes the live parts of a page in place.
"use strict";

document.addEventListener("submit", (event) => {
  const question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// An element with data-refresh="/path" and data-every="ms" is replaced by
// what the path answers, every so often, while the page is visible.
function refresh(element) {
  const path = element.getAttribute("data-refresh");
  const every = Number(element.getAttribute("data-every")) || 10000;
  const tick = async () => {
    if (!document.hidden) {
      try {
        const answer = await fetch(path, { credentials: "same-origin", headers: { accept: "text/html" } });
        if (answer.ok) {
          const fragment = document.createElement("template");
          fragment.innerHTML = await answer.text();
          element.replaceChildren(fragment.content);
          element.setAttribute("data-refreshed", new Date().toISOString());
        } else if (answer.status === 401 || answer.redirected) {
          window.location.reload();
        }
      } catch (_) {
        // The server is away for a moment: the next tick tries again.
      }
    }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

document.querySelectorAll("[data-refresh]").forEach(refresh);
