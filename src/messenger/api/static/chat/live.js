// The live event stream (GET /api/v1/ws), kept connected.
//
// When the socket drops (server restart, network) it reconnects with exponential backoff
// and jitter, with `?resume=1`, and sends `resume` with the last seq seen per conversation:
// the server replays what was missed, in order, before any live event, so after `resumed`
// nothing is missing and (frames are also de-duplicated by message id upstream) nothing is
// repeated. A close with 4401 (token expired) refreshes the token before reconnecting.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const SILENCE_MS = 65_000; // the server pings every 25 s: this long without a frame is a dead link

export class LiveSocket {
  /**
   * @param session  the Session (access tokens)
   * @param handlers { frame(f), state(s, info), positions() -> {conversation_id: seq}, resumed(f) }
   */
  constructor(session, handlers) {
    this.session = session;
    this.handlers = handlers;
    this.ws = null;
    this.state = "idle";
    this.attempt = 0;
    this.everOpened = false;
    this.timer = null;
    this.silence = null;
    this.stopped = true;
    session.onChange((reason) => {
      if (reason === "tokens" && this.state === "open") {
        this.send({ type: "auth", access_token: session.data.access_token });
      }
    });
    window.addEventListener("online", () => { if (this.state === "offline") this.reconnectNow(); });
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.silence);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "bye");
    }
    this.setState("idle");
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  reconnectNow() {
    if (this.stopped || this.state === "connecting" || this.state === "resuming" || this.state === "open") return;
    clearTimeout(this.timer);
    this.connect();
  }

  setState(state, info = {}) {
    this.state = state;
    this.handlers.state(state, info);
  }

  async connect() {
    clearTimeout(this.timer);
    this.setState(this.everOpened ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this.session.accessToken();
    } catch (error) {
      if (error.status === 401) { this.stop(); return; } // signed out: the app shows sign-in
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) return;
    const resume = this.everOpened;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/api/v1/ws?access_token=${encodeURIComponent(token)}${resume ? "&resume=1" : ""}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.heard();
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      this.receive(frame, resume);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearTimeout(this.silence);
      if (this.stopped) return;
      if (event.code === 4401) {
        // Expired or revoked token: a refresh either fixes it or signs out (stop via 401).
        this.session.refresh().then(() => this.scheduleReconnect(true), () => this.scheduleReconnect());
        this.setState("offline", { retryAt: Date.now() });
        return;
      }
      this.scheduleReconnect();
    };
  }

  receive(frame, resume) {
    switch (frame.type) {
      case "ready":
        if (resume) {
          this.setState("resuming");
          this.send({ type: "resume", conversations: this.handlers.positions() });
        } else {
          this.opened();
        }
        return;
      case "resumed":
        this.opened();
        this.handlers.resumed(frame);
        return;
      case "ping":
        this.send({ type: "pong" });
        return;
      case "pong":
      case "authenticated":
        return;
      default:
        this.handlers.frame(frame);
    }
  }

  opened() {
    const wasOffline = this.everOpened;
    this.everOpened = true;
    this.attempt = 0;
    this.setState("open", { back: wasOffline });
  }

  heard() {
    clearTimeout(this.silence);
    this.silence = setTimeout(() => { if (this.ws) this.ws.close(4000, "silent"); }, SILENCE_MS);
  }

  scheduleReconnect(now = false) {
    if (this.stopped) return;
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    const delay = now ? 0 : Math.round(base * (0.75 + Math.random() * 0.5));
    this.setState("offline", { retryAt: Date.now() + delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}
