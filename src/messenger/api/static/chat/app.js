// The chat: sign-in, the inbox, conversations, live updates. Plain DOM, no framework.
import { Api, ApiError, Session, newClientId } from "./api.js";
import { LiveSocket } from "./live.js";
import { Conversation } from "./conversation.js";
import { $, avatar, clearErrors, h, knownName, nameOf, relativeTime, showError, setNameSource } from "./ui.js";

const session = new Session();
const api = new Api(session);
setNameSource(api);

const state = {
  me: null,
  inbox: new Map(), // conversation id -> inbox entry
  seqs: new Map(), // conversation id -> the last seq seen (what a resume starts after)
  open: null, // the Conversation on screen
  inboxReload: null,
};

const live = new LiveSocket(session, {
  frame: onFrame,
  state: onLiveState,
  positions: () => Object.fromEntries(state.seqs),
  resumed: (frame) => {
    for (const id of frame.refused || []) forget(id);
    reloadInboxSoon(0); // conversations joined while offline, unread counts
    if (state.open) state.open.afterResume();
  },
});

// ---------------------------------------------------------------------------------------
// Sign in, register, sign out

function showAuth(notice = "") {
  live.stop();
  state.me = null;
  state.inbox.clear();
  state.seqs.clear();
  if (state.open) state.open.close();
  state.open = null;
  $("loading").hidden = true;
  $("app").hidden = true;
  $("banner").hidden = true;
  $("auth").hidden = false;
  $("auth-notice").textContent = notice;
  $("auth-notice").hidden = !notice;
  selectTab("signin");
}

function selectTab(which) {
  for (const name of ["signin", "register"]) {
    $(`tab-${name}`).setAttribute("aria-selected", String(name === which));
    $(`${name}-form`).hidden = name !== which;
  }
  const first = which === "signin" ? $("signin-login") : $("register-first_name");
  first.focus();
}

$("tab-signin").addEventListener("click", () => selectTab("signin"));
$("tab-register").addEventListener("click", () => selectTab("register"));

function formError(prefix, error, fields) {
  const blamed = error.fields.filter((field) => fields.includes(field));
  if (blamed.length) {
    for (const field of blamed) showError(prefix, field, error.message);
    $(`${prefix}-${blamed[0]}`).focus();
  } else if (error.status === 429) {
    const wait = error.details.retryAfter ? ` Try again in ${error.details.retryAfter} s.` : "";
    $(`${prefix}-error`).textContent = `Too many attempts.${wait}`;
  } else {
    $(`${prefix}-error`).textContent = error.message;
  }
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const login = $("signin-login").value.trim();
  const password = $("signin-password").value;
  if (!login) return showError("signin", "login", "Enter your username or email.");
  if (!password) return showError("signin", "password", "Enter your password.");
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api.signIn(login, password);
    $("signin-password").value = "";
    await enterApp();
  } catch (error) {
    if (error.status === 401) showError("signin", "password", "Wrong username, email or password.");
    else formError("signin", error, ["login", "password"]);
  } finally {
    button.disabled = false;
  }
});

const REGISTER_FIELDS = ["first_name", "last_name", "username", "email", "password"];

$("register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const fields = Object.fromEntries(REGISTER_FIELDS.map((f) => [f, $(`register-${f}`).value]));
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api.register(fields);
    await api.signIn(fields.username, fields.password);
    $("register-password").value = "";
    await enterApp();
  } catch (error) {
    formError("register", error, REGISTER_FIELDS);
  } finally {
    button.disabled = false;
  }
});

$("sign-out").addEventListener("click", async () => {
  await api.signOut(); // the session's change event shows the sign-in page
});

session.onChange((reason) => {
  if (reason === "expired") showAuth("Your session has ended. Please sign in again.");
  else if (reason === "signed-out") showAuth();
});

// ---------------------------------------------------------------------------------------
// The app: who I am, the inbox, routing

async function enterApp() {
  $("auth").hidden = true;
  $("loading").hidden = false;
  try {
    state.me = await api.call("GET", "/api/v1/me");
  } catch (error) {
    if (error.status === 401) return showAuth("Your session has ended. Please sign in again.");
    banner(`${error.message} Retrying…`, false);
    setTimeout(enterApp, 2000);
    return;
  }
  $("banner").hidden = true;
  $("loading").hidden = true;
  $("app").hidden = false;
  const me = state.me;
  const myName = `${me.first_name} ${me.last_name}`;
  $("me-name").textContent = myName;
  $("me-username").textContent = `@${me.account.username}`;
  avatar($("me-avatar"), myName, me.id);
  live.start(); // before loading anything: what happens from now on arrives live
  await loadInbox();
  showRoute();
}

function conversationIdInPath() {
  const match = location.pathname.match(/^\/c\/([^/]+)\/?$/);
  return match ? decodeURIComponent(match[1]) : null;
}

function navigate(path) {
  if (location.pathname !== path) history.pushState({}, "", path);
  showRoute();
}

window.addEventListener("popstate", () => { if (state.me) showRoute(); });

function showRoute() {
  const id = conversationIdInPath();
  if (state.open && state.open.id !== id) {
    state.open.close();
    state.open = null;
  }
  $("app").classList.toggle("open", Boolean(id));
  $("conv-empty").hidden = Boolean(id);
  if (!id) {
    $("conv-view").hidden = true;
    $("conv-notfound").hidden = true;
    document.title = "Messenger";
  } else if (!state.open) {
    state.open = new Conversation(id, {
      api, me: state.me, live, seqs: state.seqs,
      onRead: (conversationId) => setUnread(conversationId, 0),
      onGone: (conversationId) => forget(conversationId),
      entry: () => state.inbox.get(id),
    });
    state.open.load();
  }
  renderInbox();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  if (!link || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
$("back").addEventListener("click", () => navigate("/"));

async function loadInbox() {
  try {
    const page = await api.call("GET", "/api/v1/me/conversations?limit=100");
    const seen = new Set();
    for (const entry of page.items) {
      seen.add(entry.conversation_id);
      const known = state.inbox.get(entry.conversation_id);
      // The inbox is written by the relay, a moment behind live frames: keep what is newer.
      if (!known || known.activity_at <= entry.activity_at) state.inbox.set(entry.conversation_id, entry);
      else known.unread_count = Math.max(known.unread_count, entry.unread_count);
    }
    if (state.open) setUnreadIfOpen();
  } catch (error) {
    if (error.status === 401) return;
    reloadInboxSoon(3000);
  }
  renderInbox();
}

function reloadInboxSoon(delay = 400) {
  clearTimeout(state.inboxReload);
  state.inboxReload = setTimeout(loadInbox, delay);
}

function setUnread(conversationId, count) {
  const entry = state.inbox.get(conversationId);
  if (entry && entry.unread_count !== count) {
    entry.unread_count = count;
    renderInbox();
  }
}

function setUnreadIfOpen() {
  const entry = state.inbox.get(state.open.id);
  if (entry && state.open.readUpToDate()) entry.unread_count = 0;
}

function forget(conversationId) {
  state.inbox.delete(conversationId);
  state.seqs.delete(conversationId);
  if (state.open && state.open.id === conversationId) state.open.showNotFound();
  renderInbox();
}

function entryTitle(entry) {
  if (entry.type === "group") return entry.title || "Group";
  return entry.peer_id ? knownName(entry.peer_id) || "…" : "Direct message";
}

function renderInbox() {
  const list = $("inbox");
  const entries = [...state.inbox.values()].sort((a, b) => (a.activity_at < b.activity_at ? 1 : -1));
  const openId = state.open ? state.open.id : null;
  list.replaceChildren(...entries.map((entry) => inboxItem(entry, entry.conversation_id === openId)));
  $("inbox-empty").hidden = entries.length > 0;
  for (const entry of entries) {
    if (entry.type === "direct" && entry.peer_id && !knownName(entry.peer_id)) {
      nameOf(entry.peer_id).then(() => renderInbox());
      return;
    }
  }
}

function inboxItem(entry, current) {
  const title = entryTitle(entry);
  const unread = entry.unread_count > 0 && !current;
  let preview = entry.last_message_preview ?? "";
  if (entry.last_message_id && entry.last_message_preview === null) preview = "Message deleted";
  if (!entry.last_message_id) preview = entry.type === "group" ? "Group created" : "No messages yet";
  else if (entry.last_sender_id === state.me.id) preview = `You: ${preview}`;
  else if (entry.type === "group" && entry.last_sender_name) preview = `${entry.last_sender_name.split(" ")[0]}: ${preview}`;
  const avatarEl = h("span", { class: "avatar", "aria-hidden": "true" });
  avatar(avatarEl, title, entry.type === "direct" ? entry.peer_id : entry.conversation_id);
  const link = h("a", {
    href: `/c/${entry.conversation_id}`, "data-nav": "", "data-conversation": entry.conversation_id,
    class: unread ? "unread" : "", "aria-current": current ? "page" : null,
    "aria-label": `${title}${unread ? `, ${entry.unread_count} unread` : ""}`,
  },
  avatarEl,
  h("span", { class: "text" },
    h("span", { class: "top" },
      h("span", { class: "title" }, title),
      h("time", { datetime: entry.activity_at, title: new Date(entry.activity_at).toLocaleString() },
        relativeTime(entry.activity_at))),
    h("span", { class: "bottom" },
      h("span", { class: "preview" }, preview),
      unread ? h("span", { class: "badge", "data-unread": String(entry.unread_count) }, String(entry.unread_count)) : null)));
  return h("li", {}, link);
}

// ---------------------------------------------------------------------------------------
// Live frames

function onFrame(frame) {
  const id = frame.conversation_id;
  if (typeof frame.seq === "number" && id) {
    state.seqs.set(id, Math.max(state.seqs.get(id) || 0, frame.seq));
  }
  const open = state.open && state.open.id === id ? state.open : null;
  switch (frame.type) {
    case "message.created":
      messageArrived(frame.message, Boolean(open));
      if (open) open.onMessage(frame.message);
      break;
    case "message.edited":
    case "message.deleted": {
      const entry = state.inbox.get(id);
      if (entry && entry.last_message_id === frame.message.id) {
        entry.last_message_preview = frame.message.body === null ? null : frame.message.body.slice(0, 120);
        renderInbox();
      }
      if (open) open.onMessage(frame.message);
      break;
    }
    case "conversation.created":
      conversationArrived(frame);
      break;
    case "member.added":
      if (open) open.onMembersAdded(frame);
      else if (!state.inbox.has(id) && frame.members.some((m) => m.user_id === state.me.id)) discover(id);
      break;
    case "member.removed":
      if (frame.user_id === state.me.id) forget(id);
      else if (open) open.onMemberRemoved(frame);
      break;
    case "read":
      if (open) open.onRead(frame);
      break;
    case "typing":
      if (open) open.onTyping(frame);
      break;
    case "log.trimmed":
      // The server no longer has the events before this one: what is shown may miss some, so
      // the open conversation is loaded again from its history, and the inbox too.
      if (open) {
        open.close();
        state.open = null;
        showRoute();
      }
      loadInbox();
      break;
    default:
      break;
  }
}

function messageArrived(message, isOpen) {
  const entry = state.inbox.get(message.conversation_id);
  if (!entry) {
    discover(message.conversation_id, message); // a conversation this page did not know yet
    return;
  }
  if (entry.last_message_id && entry.last_message_id >= message.id) return; // already counted
  entry.last_message_id = message.id;
  entry.last_message_at = message.created_at;
  entry.last_sender_id = message.sender_id;
  entry.last_sender_name = message.sender_name;
  entry.last_message_preview = message.body === null ? null : message.body.slice(0, 120);
  entry.activity_at = message.created_at;
  const mine = message.sender_id === state.me.id;
  if (!mine && !(isOpen && state.open.atBottomAndVisible())) entry.unread_count += 1;
  renderInbox();
}

/** A conversation this page learns of from a frame: read it (the inbox row may lag behind). */
async function discover(conversationId, message = null) {
  try {
    conversationArrived(await api.call("GET", `/api/v1/conversations/${conversationId}`));
    if (message) messageArrived(message, false);
  } catch {
    reloadInboxSoon();
  }
}

function conversationArrived(frame) {
  const { conversation, members } = frame;
  if (state.inbox.has(conversation.id)) return;
  const peer = members.find((m) => m.user_id !== state.me.id);
  state.inbox.set(conversation.id, {
    conversation_id: conversation.id, type: conversation.type, title: conversation.title,
    peer_id: conversation.type === "direct" && peer ? peer.user_id : null,
    last_message_id: null, last_message_at: null, last_sender_id: null, last_sender_name: null,
    last_message_preview: null, unread_count: 0, activity_at: conversation.created_at,
  });
  renderInbox();
}

// ---------------------------------------------------------------------------------------
// Offline banner

let bannerTimer = null;
let countdown = null;

function banner(text, ok) {
  const el = $("banner");
  $("banner-text").textContent = text;
  el.classList.toggle("ok", Boolean(ok));
  el.hidden = false;
}

function onLiveState(status, info) {
  clearInterval(countdown);
  clearTimeout(bannerTimer);
  if (status === "open") {
    if (info.back) {
      banner("Back online.", true);
      bannerTimer = setTimeout(() => { $("banner").hidden = true; }, 2000);
    } else {
      $("banner").hidden = true;
    }
  } else if (status === "offline") {
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((info.retryAt - Date.now()) / 1000));
      banner(seconds > 0 ? `You're offline. Reconnecting in ${seconds} s…` : "You're offline. Reconnecting…", false);
    };
    tick();
    countdown = setInterval(tick, 500);
  } else if (status === "reconnecting" || status === "resuming") {
    banner("Reconnecting…", false);
  }
}

$("banner-retry").addEventListener("click", () => live.reconnectNow());

// ---------------------------------------------------------------------------------------
// Find a person, new group

async function lookUp(username) {
  return api.call("GET", `/api/v1/users/by-username/${encodeURIComponent(username.trim().toLowerCase())}`);
}

async function openDirect(userId) {
  const view = await api.call("POST", "/api/v1/conversations", { type: "direct", user_id: userId });
  conversationArrived(view);
  navigate(`/c/${view.conversation.id}`);
}

$("find-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(event.currentTarget);
  const input = $("find-username");
  const result = $("find-result");
  result.replaceChildren();
  const username = input.value.trim();
  if (!username) return showError("find", "username", "Type a username.");
  try {
    const person = await lookUp(username);
    const name = `${person.first_name} ${person.last_name}`;
    const avatarEl = h("span", { class: "avatar small", "aria-hidden": "true" });
    avatar(avatarEl, name, person.id);
    const isMe = person.id === state.me.id;
    const button = h("button", { type: "button", class: "primary", id: "find-open", disabled: isMe ? "" : null },
      isMe ? "That's you" : "Message");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await openDirect(person.id);
        input.value = "";
        result.replaceChildren();
      } catch (error) {
        showError("find", "username", error.message);
        button.disabled = false;
      }
    });
    result.replaceChildren(h("div", { class: "found" }, avatarEl,
      h("div", { class: "who" }, h("strong", {}, name), h("span", {}, `@${person.username}`)), button));
    if (!isMe) button.focus();
  } catch (error) {
    showError("find", "username", error.status === 404 ? `No one is called “${username}”.` : error.message);
  }
});

const group = { members: new Map() };

function renderChips() {
  $("group-chips").replaceChildren(...[...group.members.values()].map((person) => {
    const remove = h("button", { type: "button", "aria-label": `Remove ${person.username}` }, "×");
    remove.addEventListener("click", () => { group.members.delete(person.id); renderChips(); });
    return h("li", {}, `${person.first_name} ${person.last_name} (@${person.username})`, remove);
  }));
}

$("new-group").addEventListener("click", () => {
  group.members.clear();
  renderChips();
  clearErrors($("group-form"));
  $("group-title").value = "";
  $("group-member").value = "";
  $("group-dialog").showModal();
  $("group-title").focus();
});
$("group-cancel").addEventListener("click", () => $("group-dialog").close());

async function addChip() {
  const input = $("group-member");
  const username = input.value.trim();
  $("group-member-error").textContent = "";
  input.removeAttribute("aria-invalid");
  if (!username) return;
  try {
    const person = await lookUp(username);
    if (person.id === state.me.id) return showError("group", "member", "You are in the group already.");
    group.members.set(person.id, person);
    input.value = "";
    renderChips();
  } catch (error) {
    showError("group", "member", error.status === 404 ? `No one is called “${username}”.` : error.message);
  }
}

$("group-add").addEventListener("click", addChip);
$("group-member").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    addChip();
  }
});

$("group-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(event.currentTarget);
  const title = $("group-title").value.trim();
  if (!title) return showError("group", "title", "Give the group a title.");
  try {
    const view = await api.call("POST", "/api/v1/conversations",
      { type: "group", title, member_ids: [...group.members.keys()] });
    $("group-dialog").close();
    conversationArrived(view);
    navigate(`/c/${view.conversation.id}`);
  } catch (error) {
    if (error.field === "title") showError("group", "title", error.message);
    else $("group-error").textContent = error.message;
  }
});

// Keep relative times fresh.
setInterval(() => { if (state.me) renderInbox(); }, 60_000);

// ---------------------------------------------------------------------------------------

if (session.signedIn) enterApp();
else showAuth();

// For tests and debugging in the console: the page's live state, read-only.
window.messenger = { state, live, ApiError, newClientId };
