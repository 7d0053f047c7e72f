// One open conversation: its history (newest at the bottom, older pages on scroll up), live
// messages, sends with their state, edits and deletes, read markers, typing, members.
import { newClientId } from "./api.js";
import { $, avatar, clearErrors, clock, h, knownName, nameOf, rememberName, showError } from "./ui.js";

const PAGE = 40;
const NEAR_PX = 80;
const TYPING_SHOWN_MS = 4000;
const TYPING_EVERY_MS = 2500;

export class Conversation {
  constructor(id, ctx) {
    this.id = id;
    this.ctx = ctx;
    this.api = ctx.api;
    this.me = ctx.me;
    this.byId = new Map(); // message id -> {msg, el}
    this.pending = new Map(); // client_message_id -> {body, state, error, el}
    this.members = new Map(); // user id -> member
    this.conversation = null;
    this.oldestId = null;
    this.newestId = null;
    this.hasMore = false;
    this.loadingOlder = false;
    this.readSent = null;
    this.typing = new Map(); // user id -> timer
    this.lastTypingSent = 0;
    this.sending = Promise.resolve(); // sends go one after another: they commit in typed order
    this.aborter = new AbortController();
    this.closed = false;
  }

  // -- lifecycle ------------------------------------------------------------------------

  async load() {
    $("conv-notfound").hidden = true;
    $("conv-view").hidden = false;
    $("messages").replaceChildren(h("li", { class: "history-edge" }, "Loading…"));
    $("typing").textContent = "";
    $("members-panel").hidden = true;
    $("members-toggle").setAttribute("aria-expanded", "false");
    $("jump").hidden = true;
    $("conv-title").textContent = "";
    $("conv-sub").textContent = "";
    this.bind();
    let view;
    let page;
    try {
      view = await this.api.call("GET", `/api/v1/conversations/${this.id}`);
      page = await this.api.call("GET", `/api/v1/conversations/${this.id}/messages?limit=${PAGE}`);
    } catch (error) {
      if (this.closed) return;
      if (error.status === 404 || error.status === 400) return this.showNotFound();
      $("messages").replaceChildren(h("li", { class: "history-edge" }, `Couldn't load this conversation: ${error.message}`));
      return;
    }
    if (this.closed) return;
    this.conversation = view.conversation;
    const seqs = this.ctx.seqs;
    seqs.set(this.id, Math.max(seqs.get(this.id) || 0, view.conversation.last_seq));
    for (const member of view.members) this.members.set(member.user_id, member);
    this.renderHeader();
    const list = $("messages");
    list.replaceChildren(h("li", { class: "history-edge", id: "history-edge" }));
    for (const message of [...page.items].reverse()) this.insert(message);
    this.hasMore = page.has_more;
    this.oldestId = page.items.length ? page.items[page.items.length - 1].id : null;
    this.renderEdge();
    this.regroup();
    this.refreshSeen();
    this.scrollToBottom();
    await this.fillViewport();
    this.markReadSoon();
    if (matchMedia("(min-width: 721px)").matches || !("ontouchstart" in window)) $("composer-input").focus();
  }

  close() {
    this.closed = true;
    this.aborter.abort();
    for (const timer of this.typing.values()) clearTimeout(timer);
    clearTimeout(this.readTimer);
  }

  showNotFound() {
    $("conv-view").hidden = true;
    $("conv-notfound").hidden = false;
    document.title = "Not found · Messenger";
  }

  bind() {
    const opts = { signal: this.aborter.signal };
    const input = $("composer-input");
    input.value = "";
    input.style.height = "";
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    }, opts);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    }, opts);
    input.addEventListener("input", () => {
      input.style.height = "";
      input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
      const now = Date.now();
      if (input.value.trim() && now - this.lastTypingSent > TYPING_EVERY_MS) {
        if (this.ctx.live.send({ type: "typing", conversation_id: this.id })) this.lastTypingSent = now;
      }
    }, opts);
    $("messages").addEventListener("scroll", () => {
      const list = $("messages");
      if (list.scrollTop < NEAR_PX) this.loadOlder();
      if (this.nearBottom()) {
        $("jump").hidden = true;
        this.markReadSoon();
      }
    }, opts);
    $("jump").addEventListener("click", () => { this.scrollToBottom(); $("composer-input").focus(); }, opts);
    document.addEventListener("visibilitychange", () => this.markReadSoon(), opts);
    $("members-toggle").addEventListener("click", () => {
      const panel = $("members-panel");
      panel.hidden = !panel.hidden;
      $("members-toggle").setAttribute("aria-expanded", String(!panel.hidden));
      if (!panel.hidden) this.renderMembers();
    }, opts);
    $("add-member-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.addMember();
    }, opts);
  }

  // -- header and members -----------------------------------------------------------------

  peerId() {
    for (const id of this.members.keys()) if (id !== this.me.id) return id;
    return null;
  }

  async renderHeader() {
    const c = this.conversation;
    let title = c.title || "Group";
    let seed = c.id;
    if (c.type === "direct") {
      const peer = this.peerId() || (this.ctx.entry() || {}).peer_id;
      seed = peer;
      title = peer ? await nameOf(peer) : "Direct message";
      $("conv-sub").textContent = "Direct message";
    } else {
      $("conv-sub").textContent = `${this.members.size} member${this.members.size === 1 ? "" : "s"}`;
    }
    if (this.closed) return;
    $("conv-title").textContent = title;
    avatar($("conv-avatar"), title, seed);
    document.title = `${title} · Messenger`;
  }

  isAdmin() {
    const mine = this.members.get(this.me.id);
    return Boolean(mine && mine.role === "admin");
  }

  async renderMembers() {
    const group = this.conversation && this.conversation.type === "group";
    $("add-member-form").hidden = !(group && this.isAdmin());
    const ids = [...this.members.keys()];
    await Promise.all(ids.map((id) => nameOf(id)));
    if (this.closed) return;
    $("members-list").replaceChildren(...ids.map((id) => {
      const member = this.members.get(id);
      const name = knownName(id) || "…";
      const avatarEl = h("span", { class: "avatar small", "aria-hidden": "true" });
      avatar(avatarEl, name, id);
      let action = null;
      if (group && id === this.me.id) {
        action = h("button", { type: "button", class: "ghost danger" }, "Leave group");
        action.addEventListener("click", () => this.removeMember(id, action));
      } else if (group && this.isAdmin()) {
        action = h("button", { type: "button", class: "ghost danger", "aria-label": `Remove ${name}` }, "Remove");
        action.addEventListener("click", () => this.removeMember(id, action));
      }
      return h("li", { "data-member": id },
        avatarEl,
        h("span", { class: "who" }, name, id === this.me.id ? " (you)" : "",
          member.role === "admin" ? h("span", { class: "role" }, "admin") : null),
        action);
    }));
    if (group) this.renderHeader();
  }

  async addMember() {
    const input = $("add-member-username");
    clearErrors($("members-panel"));
    const username = input.value.trim();
    if (!username) return;
    try {
      const person = await this.api.call("GET", `/api/v1/users/by-username/${encodeURIComponent(username.toLowerCase())}`);
      rememberName(person.id, `${person.first_name} ${person.last_name}`);
      const view = await this.api.call("POST", `/api/v1/conversations/${this.id}/members`, { user_ids: [person.id] });
      for (const member of view.members) this.members.set(member.user_id, member);
      input.value = "";
      this.renderMembers();
    } catch (error) {
      showError("add-member", "username", error.status === 404 && error.code === "not_found" && !error.details.conversation_id
        ? `No one is called “${username}”.` : error.message);
    }
  }

  async removeMember(userId, button) {
    button.disabled = true;
    try {
      await this.api.call("DELETE", `/api/v1/conversations/${this.id}/members/${userId}`);
      if (userId === this.me.id) {
        this.ctx.onGone(this.id);
        history.pushState({}, "", "/");
        window.dispatchEvent(new PopStateEvent("popstate"));
        return;
      }
      this.members.delete(userId);
      this.renderMembers();
    } catch (error) {
      showError("add-member", "username", error.message);
      button.disabled = false;
    }
  }

  onMembersAdded(frame) {
    for (const member of frame.members) this.members.set(member.user_id, member);
    if (this.conversation) this.conversation.member_count = this.members.size;
    if (!$("members-panel").hidden) this.renderMembers();
    else if (this.conversation) this.renderHeader();
  }

  onMemberRemoved(frame) {
    this.members.delete(frame.user_id);
    if (frame.promoted && this.members.has(frame.promoted)) this.members.get(frame.promoted).role = "admin";
    if (!$("members-panel").hidden) this.renderMembers();
    else if (this.conversation) this.renderHeader();
    this.refreshSeen();
  }

  // -- history ---------------------------------------------------------------------------

  renderEdge() {
    const edge = $("history-edge");
    if (!edge) return;
    if (this.hasMore) edge.textContent = this.loadingOlder ? "Loading earlier messages…" : "";
    else edge.textContent = this.byId.size ? "This is the beginning of the conversation." : "No messages yet. Say hello!";
  }

  async fillViewport() {
    const list = $("messages");
    while (!this.closed && this.hasMore && list.scrollHeight <= list.clientHeight + NEAR_PX) {
      if (!(await this.loadOlder())) break;
    }
  }

  async loadOlder() {
    if (this.loadingOlder || !this.hasMore || !this.oldestId) return false;
    this.loadingOlder = true;
    this.renderEdge();
    let page;
    try {
      page = await this.api.call("GET", `/api/v1/conversations/${this.id}/messages?limit=${PAGE}&before=${this.oldestId}`);
    } catch (error) {
      this.loadingOlder = false;
      const edge = $("history-edge");
      if (edge) edge.textContent = `Couldn't load earlier messages (${error.message}). Scroll up to try again.`;
      return false;
    }
    if (this.closed) return false;
    const list = $("messages");
    const height = list.scrollHeight;
    const top = list.scrollTop;
    for (const message of page.items) this.insert(message); // newest first: each goes above
    this.hasMore = page.has_more;
    if (page.items.length) this.oldestId = page.items[page.items.length - 1].id;
    this.loadingOlder = false;
    this.renderEdge();
    this.regroup();
    this.refreshSeen();
    list.scrollTop = top + (list.scrollHeight - height); // keep what the reader was looking at
    return true;
  }

  // -- messages --------------------------------------------------------------------------

  /** Put a stored message in its place by id (ids grow in commit order); known ones update. */
  insert(message) {
    const known = this.byId.get(message.id);
    if (known) {
      known.msg = message;
      const fresh = this.messageElement(message);
      known.el.replaceWith(fresh);
      known.el = fresh;
      return false;
    }
    if (message.sender_id === this.me.id) {
      const sent = this.pending.get(message.client_message_id);
      if (sent) {
        this.pending.delete(message.client_message_id);
        sent.el.remove();
      }
    }
    const el = this.messageElement(message);
    const entry = { msg: message, el };
    this.byId.set(message.id, entry);
    const list = $("messages");
    let before = null;
    for (const node of list.querySelectorAll("li.msg")) {
      if (!node.dataset.id || node.dataset.id > message.id) { before = node; break; }
    }
    if (before) list.insertBefore(el, before);
    else list.append(el);
    if (!this.newestId || message.id > this.newestId) this.newestId = message.id;
    return true;
  }

  onMessage(message) {
    if (message.conversation_id !== this.id || !this.conversation) return;
    const follow = this.nearBottom() || message.sender_id === this.me.id;
    const added = this.insert(message);
    this.regroup();
    this.refreshSeen();
    if (!added) return;
    if (message.sender_id !== this.me.id) this.stopTyping(message.sender_id);
    if (follow) this.scrollToBottom();
    else $("jump").hidden = false;
    this.renderEdge();
    this.markReadSoon();
  }

  messageElement(message) {
    const mine = message.sender_id === this.me.id;
    const deleted = message.body === null;
    rememberName(message.sender_id, message.sender_name);
    const classes = ["msg", mine ? "mine" : "theirs", deleted ? "deleted" : ""].filter(Boolean).join(" ");
    const meta = h("span", { class: "meta" },
      h("time", { datetime: message.created_at, title: new Date(message.created_at).toLocaleString() }, clock(message.created_at)),
      message.edited_at && !deleted ? h("span", { class: "edited" }, "edited") : null,
      mine && !deleted ? h("span", { class: "state", "data-state": "sent" }, "Sent") : null);
    let actions = null;
    if (mine && !deleted) {
      const edit = h("button", { type: "button", "aria-label": "Edit message" }, "Edit");
      const remove = h("button", { type: "button", "aria-label": "Delete message" }, "Delete");
      edit.addEventListener("click", () => this.startEdit(message.id));
      remove.addEventListener("click", () => this.deleteMessage(message.id, remove));
      actions = h("div", { class: "msg-actions" }, edit, remove);
    }
    return h("li", { class: classes, "data-id": message.id, "data-sender": message.sender_id,
      "data-client-id": message.client_message_id },
    h("div", { class: "sender" }, message.sender_name),
    h("div", { class: "bubble" }, h("span", { class: "body" }, deleted ? "Message deleted" : message.body), meta),
    actions);
  }

  /** The sender's name on the first of a run of messages from them (groups, others only). */
  regroup() {
    let previous = null;
    const group = this.conversation && this.conversation.type === "group";
    for (const node of $("messages").querySelectorAll("li.msg")) {
      const sender = node.dataset.sender;
      const first = sender !== previous;
      node.classList.toggle("first", first);
      const label = node.querySelector(".sender");
      if (label) label.hidden = !(first && group && sender !== this.me.id);
      previous = sender;
    }
  }

  // -- sending ----------------------------------------------------------------------------

  submit() {
    const input = $("composer-input");
    const body = input.value;
    if (!body.trim()) return;
    input.value = "";
    input.style.height = "";
    // The message ends the typing indicator on the other side: the next keystroke may say
    // "typing" again soon, but not within the server's 1 s throttle.
    this.lastTypingSent = Math.min(this.lastTypingSent, Date.now() - TYPING_EVERY_MS + 1000);
    const send = { client_message_id: newClientId(), body, state: "sending", error: null, el: null };
    this.pending.set(send.client_message_id, send);
    send.el = this.pendingElement(send);
    this.refreshPending(send);
    $("messages").append(send.el);
    this.scrollToBottom();
    this.sending = this.sending.then(() => this.post(send));
  }

  async post(send) {
    send.state = "sending";
    this.refreshPending(send);
    try {
      const message = await this.api.call("POST", `/api/v1/conversations/${this.id}/messages`,
        { body: send.body, client_message_id: send.client_message_id });
      this.onMessage(message);
    } catch (error) {
      if (!this.pending.has(send.client_message_id)) return; // it arrived live meanwhile
      send.state = "failed";
      send.error = error;
      this.refreshPending(send);
    }
  }

  pendingElement(send) {
    return h("li", { class: "msg mine sending", "data-client-id": send.client_message_id, "data-sender": this.me.id },
      h("div", { class: "bubble" }, h("span", { class: "body" }, send.body), h("span", { class: "meta" })));
  }

  refreshPending(send) {
    const el = send.el;
    el.classList.toggle("sending", send.state === "sending");
    el.classList.toggle("failed", send.state === "failed");
    const meta = el.querySelector(".meta");
    if (send.state === "sending") {
      meta.replaceChildren(h("span", { class: "state", "data-state": "sending" }, "Sending…"));
      return;
    }
    let reason = "Not sent";
    if (send.error && send.error.status === 429) {
      const wait = send.error.details.retryAfter;
      reason = `Not sent: sending too fast${wait ? ` (wait ${wait} s)` : ""}`;
    } else if (send.error && !send.error.offline && send.error.status !== 503) {
      reason = `Not sent: ${send.error.message}`;
    }
    const retry = h("button", { type: "button", class: "retry" }, "Retry");
    retry.addEventListener("click", () => this.post(send)); // the same client_message_id
    meta.replaceChildren(h("span", { class: "state", "data-state": "failed" }, reason), retry);
  }

  // -- edit and delete ---------------------------------------------------------------------

  startEdit(messageId) {
    const entry = this.byId.get(messageId);
    if (!entry || entry.msg.body === null) return;
    const bubble = entry.el.querySelector(".bubble");
    const box = h("textarea", { rows: "2", "aria-label": "Edit message", maxlength: "4000" });
    box.value = entry.msg.body;
    const save = h("button", { type: "button", class: "primary" }, "Save");
    const cancel = h("button", { type: "button" }, "Cancel");
    const error = h("p", { class: "field-error" });
    const editor = h("div", { class: "edit-box" }, box, error, h("div", { class: "input-row" }, cancel, save));
    const restore = () => {
      const current = this.byId.get(messageId);
      if (current && current.el.contains(editor)) {
        const fresh = this.messageElement(current.msg);
        current.el.replaceWith(fresh);
        current.el = fresh;
        this.regroup();
        this.refreshSeen();
      }
    };
    const commit = async () => {
      const body = box.value;
      if (body === entry.msg.body) return restore();
      save.disabled = true;
      try {
        this.onMessage(await this.api.call("PATCH", `/api/v1/conversations/${this.id}/messages/${messageId}`, { body }));
        $("composer-input").focus();
      } catch (failure) {
        error.textContent = failure.message;
        save.disabled = false;
      }
    };
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        commit();
      } else if (event.key === "Escape") {
        event.preventDefault();
        restore();
        $("composer-input").focus();
      }
    });
    save.addEventListener("click", commit);
    cancel.addEventListener("click", restore);
    bubble.replaceWith(editor);
    const actions = entry.el.querySelector(".msg-actions");
    if (actions) actions.hidden = true;
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  }

  async deleteMessage(messageId, button) {
    if (button.dataset.confirm !== "1") {
      button.dataset.confirm = "1";
      button.textContent = "Delete for everyone?";
      setTimeout(() => { button.dataset.confirm = ""; button.textContent = "Delete"; }, 4000);
      return;
    }
    button.disabled = true;
    try {
      await this.api.call("DELETE", `/api/v1/conversations/${this.id}/messages/${messageId}`);
      const entry = this.byId.get(messageId);
      if (entry) this.onMessage({ ...entry.msg, body: null, deleted_at: new Date().toISOString() });
    } catch (error) {
      button.disabled = false;
      button.textContent = `Delete failed: ${error.message}`;
    }
  }

  // -- read markers and typing ------------------------------------------------------------

  nearBottom() {
    const list = $("messages");
    return list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_PX;
  }

  atBottomAndVisible() {
    return !this.closed && document.visibilityState === "visible" && this.nearBottom();
  }

  readUpToDate() { return this.atBottomAndVisible(); }

  scrollToBottom() {
    const list = $("messages");
    list.scrollTop = list.scrollHeight;
    $("jump").hidden = true;
  }

  markReadSoon() {
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => this.markRead(), 200);
  }

  async markRead() {
    if (!this.atBottomAndVisible() || !this.newestId) return;
    const newest = this.newestId;
    if (this.readSent && this.readSent >= newest) return;
    this.readSent = newest;
    try {
      await this.api.call("POST", `/api/v1/conversations/${this.id}/read`, { message_id: newest });
      const mine = this.members.get(this.me.id);
      if (mine) mine.read_message_id = newest;
      this.ctx.onRead(this.id);
    } catch {
      this.readSent = null; // tried again on the next message or scroll
    }
  }

  onRead(frame) {
    const member = this.members.get(frame.user_id);
    if (member && (!member.read_message_id || member.read_message_id < frame.message_id)) {
      member.read_message_id = frame.message_id;
    }
    this.refreshSeen();
  }

  /** "Seen" on the newest of my messages that another member has read. */
  refreshSeen() {
    let readUpTo = null;
    let readers = 0;
    for (const [id, member] of this.members) {
      if (id === this.me.id || !member.read_message_id) continue;
      if (!readUpTo || member.read_message_id > readUpTo) readUpTo = member.read_message_id;
    }
    let seen = null;
    for (const { msg } of this.byId.values()) {
      if (msg.sender_id === this.me.id && msg.body !== null && readUpTo && msg.id <= readUpTo
          && (!seen || msg.id > seen.id)) seen = msg;
    }
    if (seen) {
      for (const [id, member] of this.members) {
        if (id !== this.me.id && member.read_message_id && member.read_message_id >= seen.id) readers += 1;
      }
    }
    const group = this.conversation && this.conversation.type === "group";
    for (const entry of this.byId.values()) {
      const state = entry.el.querySelector(".state");
      if (!state) continue;
      const isSeen = seen && entry.msg.id === seen.id;
      state.dataset.state = isSeen ? "seen" : "sent";
      state.classList.toggle("seen", Boolean(isSeen));
      state.textContent = isSeen ? (group ? `Seen by ${readers}` : "Seen") : "Sent";
    }
  }

  onTyping(frame) {
    if (frame.user_id === this.me.id) return;
    clearTimeout(this.typing.get(frame.user_id));
    this.typing.set(frame.user_id, setTimeout(() => this.stopTyping(frame.user_id), TYPING_SHOWN_MS));
    nameOf(frame.user_id).then(() => this.renderTyping());
  }

  stopTyping(userId) {
    if (!this.typing.has(userId)) return;
    clearTimeout(this.typing.get(userId));
    this.typing.delete(userId);
    this.renderTyping();
  }

  renderTyping() {
    if (this.closed) return;
    const who = [...this.typing.keys()].map((id) => (knownName(id) || "Someone").split(" ")[0]);
    let text = "";
    if (who.length === 1) text = `${who[0]} is typing…`;
    else if (who.length === 2) text = `${who[0]} and ${who[1]} are typing…`;
    else if (who.length > 2) text = "Several people are typing…";
    $("typing").textContent = text;
  }

  /** Back after an outage: missed messages were replayed; read markers are state, not
   * history (not replayed), so read them again. */
  async afterResume() {
    this.markReadSoon();
    try {
      const view = await this.api.call("GET", `/api/v1/conversations/${this.id}`);
      if (this.closed) return;
      for (const member of view.members) {
        const known = this.members.get(member.user_id);
        if (!known) this.members.set(member.user_id, member);
        else if (member.read_message_id && (!known.read_message_id || known.read_message_id < member.read_message_id)) {
          known.read_message_id = member.read_message_id;
        }
      }
      this.refreshSeen();
    } catch { /* the next read frame corrects it */ }
  }
}
