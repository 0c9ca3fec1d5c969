// The chat page: questions go to /api/v1/projects/{id}/chat (or /arena) and the answer streams back as server-sent
// events read from fetch. Model output is untrusted: it is only ever set with textContent, never as HTML.
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("chat-app");
  if (!root) return;
  const project = root.dataset.project;
  const csrf = root.dataset.csrf;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function post(url, body) {
    const res = await fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    if (!res.ok) {
      let detail = `the server answered ${res.status}`;
      try {
        const data = await res.json();
        if (typeof data.detail === "string") detail = data.detail;
        else if (Array.isArray(data.detail)) detail = data.detail.map((d) => d.msg).join("; ");
      } catch (e) { /* not JSON */ }
      throw new Error(detail);
    }
    return res;
  }

  // POST, then call onEvent with each event of the answer as it arrives
  async function stream(url, body, onEvent) {
    const res = await post(url, body);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of block.split("\n")) {
          if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
        }
      }
    }
  }

  // --- chat ---
  const ask = document.getElementById("ask");
  const conversation = document.getElementById("conversation");
  let parentId = null;  // the last answer of this conversation: the server continues from its own copy

  function feedbackControls(turnId) {
    const box = el("div", "feedback");
    const up = el("button", "thumb", "👍 Good");
    const down = el("button", "thumb", "👎 Bad");
    up.type = down.type = "button";
    up.setAttribute("aria-label", "thumbs up");
    down.setAttribute("aria-label", "thumbs down");
    const form = el("form", "correction");
    form.hidden = true;
    const correction = el("textarea");
    correction.name = "correction";
    correction.rows = 3;
    correction.maxLength = 10000;
    correction.placeholder = "What should it have said? (optional)";
    correction.setAttribute("aria-label", "correction");
    const send = el("button", "", "Send feedback");
    send.type = "submit";
    form.append(correction, send);
    const status = el("span", "thanks");
    status.setAttribute("role", "status");
    box.append(up, down, form, status);

    async function rate(label, text) {
      up.disabled = down.disabled = send.disabled = true;
      try {
        await post(`/api/v1/chat/${turnId}/feedback`, {label, correction: text || null});
        form.hidden = true;
        status.textContent = text ? "Thanks! Your correction was saved." : "Thanks for the feedback!";
        status.className = "thanks";
      } catch (err) {
        up.disabled = down.disabled = send.disabled = false;
        status.textContent = err.message;
        status.className = "thanks error";
      }
    }
    up.addEventListener("click", () => rate("good", ""));
    down.addEventListener("click", () => { form.hidden = false; correction.focus(); });
    form.addEventListener("submit", (e) => { e.preventDefault(); rate("bad", correction.value.trim()); });
    return box;
  }

  if (ask) {
    const input = ask.querySelector("textarea");
    const button = ask.querySelector("button[type=submit]");
    document.getElementById("new-conversation").addEventListener("click", () => {
      parentId = null;
      conversation.replaceChildren();
      input.focus();
    });
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); ask.requestSubmit(); }
    });
    ask.addEventListener("submit", async (e) => {
      e.preventDefault();
      const message = input.value.trim();
      if (!message) return;
      button.disabled = true;
      const you = el("div", "turn user");
      you.append(el("span", "role", "you"), el("div", "text", message));
      const turn = el("div", "turn assistant streaming");
      const text = el("div", "text");
      turn.append(el("span", "role", "assistant"), text);
      conversation.append(you, turn);
      input.value = "";
      try {
        await stream(`/api/v1/projects/${project}/chat`, {message, parent_id: parentId}, (ev) => {
          if (ev.type === "delta") text.textContent += ev.text;
          else if (ev.type === "error") throw new Error(ev.detail);
          else if (ev.type === "done") {
            turn.dataset.turn = ev.turn_id;
            parentId = ev.turn_id;
            if (ev.truncated) turn.append(el("p", "hint", "(the answer was cut off: it was too long)"));
            turn.append(feedbackControls(ev.turn_id));
          }
        });
      } catch (err) {
        turn.append(el("p", "error", err.message));
      } finally {
        turn.classList.remove("streaming");
        button.disabled = false;
      }
    });
  }

  // --- arena ---
  const arena = document.getElementById("arena-ask");
  if (arena) {
    const input = arena.querySelector("textarea");
    const button = arena.querySelector("button[type=submit]");
    const answers = document.getElementById("arena-answers");
    const sides = {a: document.getElementById("arena-a"), b: document.getElementById("arena-b")};
    const vote = document.getElementById("arena-vote");
    const status = document.getElementById("arena-status");
    let battleId = null;
    arena.addEventListener("submit", async (e) => {
      e.preventDefault();
      const message = input.value.trim();
      if (!message) return;
      button.disabled = true;
      vote.hidden = true;
      battleId = null;
      sides.a.textContent = sides.b.textContent = "";
      status.textContent = "Both models are answering…";
      status.className = "";
      answers.hidden = false;
      try {
        await stream(`/api/v1/projects/${project}/arena`, {message}, (ev) => {
          if (ev.type === "delta") sides[ev.side].textContent += ev.text;
          else if (ev.type === "error") throw new Error(ev.detail);
          else if (ev.type === "done") battleId = ev.battle_id;
        });
        status.textContent = "Which answer is better?";
        vote.hidden = false;
        vote.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      } catch (err) {
        status.textContent = err.message;
        status.className = "error";
      } finally {
        button.disabled = false;
      }
    });
    vote.querySelectorAll("button").forEach((b) => b.addEventListener("click", async () => {
      if (battleId === null) return;
      vote.querySelectorAll("button").forEach((x) => { x.disabled = true; });
      try {
        await post(`/api/v1/arena/${battleId}/vote`, {label: b.dataset.label});
        vote.hidden = true;
        status.textContent = "Vote recorded. Thank you! Ask another question to keep going.";
        status.className = "";
        input.value = "";
      } catch (err) {
        vote.querySelectorAll("button").forEach((x) => { x.disabled = false; });
        status.textContent = err.message;
        status.className = "error";
      }
    }));
  }
});
