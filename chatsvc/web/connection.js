// The one WebSocket (/ws?token=...): connecting, reconnecting with backoff, sending
// frames, and knowing when the server has handled those sent so far. Events go to the
// handlers that app.js gives `handle()`. A socket lasts as long as its access token: the
// server closes it with 4401 when the token expires or is revoked, and it reconnects at
// once with a renewed one (api.js) unless the session has ended.

import { api, currentToken, renew } from "./api.js";
import { $, showError } from "./dom.js";
import { state } from "./state.js";
import { plainWords } from "./words.js";

const MAX_BACKOFF_SECONDS = 30;

const socket = {
  ws: null,
  token: null, // the access token the socket was opened with
  ready: false,
  attempt: 0,
  timer: null,
  reconnected: false,
  pings: [],
};
const CLOSE_UNAUTHORIZED = 4401;

const handlers = {
  /** A chat or tree event (anything but `ready` and `pong`). */
  event: (event) => {},
  /** The server is ready; `again` after a reconnect. */
  ready: (again) => {},
  /** The socket is gone. */
  lost: () => {},
};

/** Sets some of `event(event)`, `ready(again)` and `lost()`. */
export function handle(given) {
  Object.assign(handlers, given);
}

/** Whether frames can be sent (the server has said `ready`). */
export function isReady() {
  return socket.ready;
}

function setConnection(kind, text) {
  const node = $("connection");
  node.dataset.state = kind;
  node.textContent = text;
}

export function connect() {
  clearTimeout(socket.timer);
  const token = currentToken();
  if (!token || socket.ws) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/ws?token=${encodeURIComponent(token)}`;
  const ws = new WebSocket(url);
  socket.ws = ws;
  socket.token = token;
  socket.ready = false;
  setConnection("connecting", "Connecting…");
  ws.addEventListener("message", (event) => {
    if (socket.ws === ws) onFrame(event.data);
  });
  ws.addEventListener("close", (event) => {
    if (socket.ws === ws) onSocketClosed(event);
  });
}

/** Connects now if logged in and not connected (the browser is back online). */
export function connectIfClosed() {
  if (currentToken() && !socket.ws) connect();
}

/** Closes the socket for good (logging out): no reconnect. */
export function disconnect() {
  clearTimeout(socket.timer);
  const ws = socket.ws;
  socket.ws = null;
  socket.ready = false;
  if (ws) ws.close(1000, "logged out");
}

async function onSocketClosed(event) {
  const wasReady = socket.ready;
  socket.ws = null;
  socket.ready = false;
  settlePings();
  handlers.lost();
  if (!currentToken()) return;
  if (event.code === CLOSE_UNAUTHORIZED) {
    // The token expired or was revoked: with a renewed one, back at once.
    const renewal = await renew(socket.token);
    if (renewal === "ended" || socket.ws) return;
    if (renewal === "ok") {
      socket.attempt = 0;
      return connect();
    }
  }
  if (!wasReady) {
    // A refused handshake looks like any failure: ask whether the token still holds
    // (a 401 signs out). A server that cannot be reached just means trying again.
    try {
      await api("GET", "/api/me");
    } catch (error) {
      if (error.status === 401) return;
    }
  }
  if (event.code === 1008) showError(plainWords("rate_limited", event.reason));
  scheduleReconnect(event.code === 1012); // 1012: the server restarts; come back at once
}

function scheduleReconnect(soon) {
  if (!currentToken() || socket.ws) return;
  const base = soon ? 0.2 : Math.min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** socket.attempt);
  const delay = base * (0.5 + Math.random() / 2); // jitter
  socket.attempt += 1;
  setConnection("offline", `Connection lost. Reconnecting in ${Math.ceil(delay)} s…`);
  socket.timer = setTimeout(connect, delay * 1000);
}

/** Sends `frame` if the socket is ready: true then. */
export function sendFrame(frame) {
  if (!socket.ready) return false;
  socket.ws.send(JSON.stringify(frame));
  return true;
}

/**
 * Resolves once the server has handled every frame sent so far (it handles a socket's
 * frames in order, and answers a `ping` with a `pong`): true then, false without a socket.
 */
export function serverCaughtUp(timeoutSeconds = 5) {
  return new Promise((resolve) => {
    if (!sendFrame({ action: "ping" })) return resolve(false);
    socket.pings.push(resolve);
    setTimeout(() => resolve(false), timeoutSeconds * 1000);
  });
}

function onPong() {
  const resolve = socket.pings.shift();
  if (resolve) resolve(true);
}

function settlePings() {
  for (const resolve of socket.pings) resolve(false);
  socket.pings = [];
}

function onFrame(text) {
  let event;
  try {
    event = JSON.parse(text);
  } catch {
    return;
  }
  if (event.type === "ready") return onReady(event);
  if (event.type === "pong") return onPong();
  handlers.event(event);
}

function onReady(event) {
  socket.ready = true;
  socket.attempt = 0;
  state.limits = event.limits;
  setConnection("connected", "Connected");
  const again = socket.reconnected;
  socket.reconnected = true;
  handlers.ready(again);
}
