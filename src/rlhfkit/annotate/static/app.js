// Keyboard shortcuts: 1/2/0/9 choose A/B/tie/both bad; number keys rank the highlighted answer; Ctrl+Enter submits.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("task");
  if (!form) return;
  const kind = form.dataset.kind;
  const rankables = Array.from(document.querySelectorAll(".rankable"));
  let current = 0;
  const highlight = () => rankables.forEach((el, i) => el.classList.toggle("current", i === current));
  if (kind === "rank") highlight();
  rankables.forEach((el, i) => el.addEventListener("click", () => { current = i; highlight(); }));

  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      form.requestSubmit(form.querySelector("button[value=submit]"));
      return;
    }
    const typing = ["TEXTAREA", "INPUT", "SELECT"].includes(document.activeElement.tagName) &&
      document.activeElement.type !== "radio" && document.activeElement.type !== "checkbox";
    if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (kind === "compare") {
      const value = {"1": "a", "2": "b", "0": "tie", "9": "both_bad"}[e.key];
      if (value) {
        form.querySelector(`input[name=label][value=${value}]`).checked = true;
        e.preventDefault();
      }
    } else if (kind === "rank" && /^[1-9]$/.test(e.key) && Number(e.key) <= rankables.length) {
      rankables[current].querySelector("input").value = e.key;
      current = Math.min(current + 1, rankables.length - 1);
      highlight();
      e.preventDefault();
    }
  });
});
