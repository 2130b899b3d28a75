// The chat page's script: no build step, no library. Writes go to the demo's views (or the API);
// everything shown comes back through the session's events stream, so every window stays in step.
(() => {
  "use strict";
  const main = document.getElementById("chat");
  const sessionId = main.dataset.sessionId;
  const list = document.getElementById("messages");
  const live = document.getElementById("live");
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  const api = `/api/sessions/${sessionId}/`;
  const page = `/chat/${sessionId}/`;

  function send(url, options = {}) {
    const headers = { "X-CSRFToken": csrf, Accept: "application/json", ...(options.headers || {}) };
    return fetch(url, { method: "POST", credentials: "same-origin", ...options, headers }).then((r) => {
      if (r.status === 204) return {};
      return r.json().then((body) => {
        if (!r.ok) throw new Error(body.detail || body.title || `HTTP ${r.status}`);
        return body;
      });
    });
  }
  const complain = (error) => window.alert(error.message);

  // ------------------------------------------------------------------ rendering

  const find = (id) => list.querySelector(`[data-message-id="${id}"]`);

  function button(action, label) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.action = action;
    b.textContent = label;
    return b;
  }

  function decorate(li) {
    // The meta line of a message: who, which id, and what can be done with it.
    const meta = li.querySelector(".meta");
    meta.querySelectorAll("button").forEach((b) => b.remove());
    if (li.dataset.role === "user") meta.append(button("edit", "Edit"));
    meta.append(button("delete", "Delete"));
  }

  function render(message) {
    let li = find(message.id);
    if (!li) {
      li = document.createElement("li");
      li.className = "message";
      li.dataset.messageId = message.id;
      li.innerHTML = '<div class="meta"><span class="role"></span><span class="id"></span></div><div class="content"></div>';
      const after = [...list.children].find((other) => Number(other.dataset.messageId) > message.id);
      list.insertBefore(li, after || null);
    }
    li.dataset.role = message.role;
    li.dataset.status = message.status || "completed";
    li.querySelector(".role").textContent = message.role;
    li.querySelector(".id").textContent = `#${message.id}`;
    const editing = li.querySelector("form.edit");
    if (editing) {
      // The message changed (saved from here, or from another window): show it as it now is.
      const fresh = document.createElement("div");
      fresh.className = "content";
      editing.replaceWith(fresh);
    }
    li.querySelector(".content").textContent = message.content;
    decorate(li);
    scrollDown();
  }

  function scrollDown() {
    list.scrollTop = list.scrollHeight;
  }

  function setTitle(title) {
    const shown = title || "Untitled";
    document.getElementById("title").textContent = shown;
    document.querySelector("#rename input[name=title]").value = title;
    const link = document.querySelector(`#sessions [data-session-id="${sessionId}"]`);
    if (link) link.textContent = shown;
    document.title = `${shown} · Chat · django-conversations demo`;
  }

  // ------------------------------------------------------------------ live events

  const handlers = {
    "message.created": render,
    "message.updated": render,
    "message.extended": ({ message_id, delta }) => {
      const li = find(message_id);
      if (!li) return;
      li.dataset.status = "in_progress";
      const content = li.querySelector(".content");
      if (content) content.textContent += delta;
      scrollDown();
    },
    "message.removed": ({ message_id }) => find(message_id)?.remove(),
    "messages.truncated": ({ after }) => {
      [...list.children].filter((li) => Number(li.dataset.messageId) > after).forEach((li) => li.remove());
    },
    "session.updated": (session) => setTitle(session.title),
    "session.deleted": () => window.location.assign("/chat/"),
  };

  // Between opening the stream and reading the session, events are held back, then applied on top of
  // what was read (created/updated/removed are idempotent; a delta may already be in the text read,
  // so held-back deltas are dropped: the reply's final message.updated carries its whole text).
  let held = null;

  function refresh() {
    held = [];
    return fetch(api, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
      .then((session) => {
        [...list.children].forEach((li) => li.remove());
        session.messages.forEach(render);
        setTitle(session.title);
      })
      .finally(() => {
        const pending = held || [];
        held = null;
        pending.filter(([kind]) => kind !== "message.extended").forEach(([kind, data]) => handlers[kind](data));
      });
  }

  const events = new EventSource(`${api}events/`);
  Object.keys(handlers).forEach((kind) => {
    events.addEventListener(kind, (event) => {
      const data = JSON.parse(event.data);
      if (held) held.push([kind, data]);
      else handlers[kind](data);
    });
  });
  events.addEventListener("ready", () => {
    live.dataset.state = "live";
    live.textContent = "● live";
    refresh();
  });
  events.addEventListener("reset", () => refresh());
  events.onerror = () => {
    live.dataset.state = "connecting";
    live.textContent = "reconnecting…";
  };

  // ------------------------------------------------------------------ actions

  const composer = document.querySelector("form.composer");
  const textarea = composer.querySelector("textarea[name=content]");
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!textarea.value.trim()) return;
    send(composer.action, { body: new FormData(composer) }).then(() => {
      textarea.value = "";
    }, complain);
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  document.querySelector("[data-action=regenerate]").addEventListener("click", () => {
    send(`${page}regenerate/`).catch(complain);
  });

  document.getElementById("rename").addEventListener("submit", (event) => {
    event.preventDefault();
    const title = event.target.querySelector("input[name=title]").value;
    send(api, {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ title }),
    }).catch(complain);
  });

  document.querySelector("[data-action=delete-session]").addEventListener("click", () => {
    if (!window.confirm("Delete this conversation?")) return;
    send(api, { method: "DELETE" }).then(() => window.location.assign("/chat/"), complain);
  });

  list.addEventListener("click", (event) => {
    const target = event.target.closest("button[data-action]");
    if (!target) return;
    const li = target.closest(".message");
    const id = li.dataset.messageId;
    const action = target.dataset.action;
    if (action === "delete") {
      send(`${page}messages/${id}/delete/`).catch(complain);
    } else if (action === "edit") {
      const content = li.querySelector(".content");
      const form = document.createElement("form");
      form.className = "edit";
      form.innerHTML = '<textarea name="content" rows="3"></textarea>' +
        '<button type="submit" class="primary" data-action="save">Save and resubmit</button> ' +
        '<button type="button" data-action="cancel">Cancel</button>';
      form.querySelector("textarea").value = content.textContent;
      content.replaceWith(form);
      form.addEventListener("submit", (submitted) => {
        submitted.preventDefault();
        send(`${page}messages/${id}/edit/`, { body: new FormData(form) }).catch(complain);
      });
    } else if (action === "cancel") {
      const form = li.querySelector("form.edit");
      const content = document.createElement("div");
      content.className = "content";
      content.textContent = form.querySelector("textarea").value;
      form.replaceWith(content);
    }
  });

  scrollDown();
})();
