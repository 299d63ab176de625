// pgchat WebSocket client: one connection that survives network loss and daemon restarts.
// DOM-free: it runs in a browser, a worker or Node (pass `options.WebSocket` where there
// is no global one).
//
//   import { createChatClient } from './sdk/client.js';
//   const client = createChatClient(token, 'wss://example.org/ws');
//   client.on('message', (frame) => …);   // any server frame type, plus the events below
//   client.connect();
//
// What it does for the caller:
// - authenticates with `auth {token}` on every (re)connect;
// - reconnects with exponential backoff, 1 s → 30 s, with jitter, so a fleet of tabs
//   does not reconnect in lockstep after a restart;
// - keeps each subscribed room's messages by id (`messages(roomId)`), upserting the whole
//   state that `message` and `message_updated` carry (a deletion is a state with
//   `deleted_at`; the older `message_deleted` frame is still accepted), and emits
//   `message_state {roomId, message, isNew}` for each change;
// - follows each room's change stream: remembers the last `rev` seen, and when a stream
//   frame's `prevRev` is not that rev (something was missed) re-joins with
//   `join {roomId, sinceRev}`, so the daemon replays what changed, compacted; after a
//   reconnect it resumes the same way (or with `since`, by seq, before any rev is known);
// - when `joined` says `behind` (too far behind to replay), drops what it holds of the
//   room, loads the latest `history` page and emits `behind {roomId, messages}`;
// - sends chat messages optimistically with a `clientId` kept in an outbox and re-sent
//   after each reconnect until acknowledged. The server stores a clientId once, so a
//   re-send never duplicates a message.
//
// Events (besides server frame types): `state` (connecting|open|reconnecting|closed, with
// {retryInMs}), `authenticated`, `outbox` (pending message changed), `send_failed`,
// `disconnected`, `auth_failed`, `message_state`, `behind`, `gap` ({roomId, lastRev,
// prevRev}: a missed change was detected and the room is being re-joined).
import { canResend, chatError } from './errors.js';

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const REQUEST_TIMEOUT_MS = 15000;
const PING_EVERY_MS = 20000;
const HISTORY_PAGE = 50;


/** Delay before reconnect attempt `attempt` (0-based): 1 s doubling to 30 s, jittered
 *  to 50–100 % of the step so clients spread out. */
export function backoffDelay(attempt, random = Math.random) {
  const step = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 16));
  return Math.round(step / 2 + random() * (step / 2));
}

function newClientId() {
  const { crypto } = globalThis;
  if (crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  return 'c-' + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 12);
}

/** The default pgchat URL: `globalThis.PGCHAT_URL` when the host set it, else the page's
 *  origin at `/ws`, ws:// or wss:// by the page's protocol. */
export function defaultChatUrl(loc = globalThis.location) {
  if (globalThis.PGCHAT_URL) return globalThis.PGCHAT_URL;
  if (!loc) throw chatError('closed', 'no pgchat URL: set PGCHAT_URL');
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return scheme + '//' + loc.host + '/ws';
}

export function createChatClient(token, url = defaultChatUrl(), options = {}) {
  const WS = options.WebSocket || globalThis.WebSocket;
  const listeners = new Map();
  // roomId -> { lastSeq, lastRev, joined, rejoining, messages: Map(id -> state) }:
  // rooms to (re)subscribe, where their streams stand, and their messages.
  const rooms = new Map();
  const outbox = new Map(); // clientId -> { clientId, roomId, message, ref, sent }
  const pending = new Map(); // ref -> { resolve, reject, timer }
  const waitingForOpen = []; // requests made while not authenticated
  let socket = null;
  let state = 'closed';
  let attempt = 0;
  let retryTimer = null;
  let pingTimer = null;
  let nextRef = 1;
  let stopped = true;
  let user = null;

  function emit(type, payload) {
    for (const fn of listeners.get(type) || []) {
      try { fn(payload); } catch (e) { console.error('pgchat listener', type, e); }
    }
  }

  function setState(next, extra = {}) {
    state = next;
    emit('state', Object.assign({ state: next }, extra));
  }

  function rawSend(frame) {
    if (!socket || socket.readyState !== 1) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  function open() {
    clearTimeout(retryTimer);
    retryTimer = null;
    setState(attempt === 0 ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new WS(url);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.onopen = () => rawSend({ type: 'auth', token, ref: 'auth' });
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (frame && typeof frame.type === 'string') handleFrame(frame);
    };
    ws.onclose = (ev) => {
      if (socket !== ws) return;
      socket = null;
      onDisconnected(ev);
    };
    ws.onerror = () => { /* onclose follows and decides */ };
  }

  function onDisconnected(ev) {
    clearInterval(pingTimer);
    for (const r of rooms.values()) r.joined = false;
    for (const item of outbox.values()) item.sent = false;
    // In-flight requests are not replayed: creating a room twice would be wrong.
    for (const [ref, p] of pending) {
      clearTimeout(p.timer);
      pending.delete(ref);
      p.reject(chatError('disconnected', 'connection lost'));
    }
    emit('disconnected', { code: ev && ev.code });
    // 4001: the token expired and was not refreshed; reconnecting with it cannot help.
    // Other server closes (4003 too slow, 4004 idle, 1001 restart) resume by `since`.
    if (ev && ev.code === 4001) {
      stopped = true;
      emit('auth_failed', { code: 'token_expired', message: 'token expired' });
      setState('closed', { reason: 'unauthorized' });
      return;
    }
    if (stopped) { setState('closed'); return; }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    const delay = backoffDelay(attempt);
    attempt += 1;
    setState('reconnecting', { retryInMs: delay });
    retryTimer = setTimeout(open, delay);
  }

  function onAuthenticated(frame) {
    attempt = 0;
    user = frame.user || null;
    setState('open');
    emit('authenticated', frame);
    for (const [roomId, r] of rooms) sendJoin(roomId, r);
    flushOutbox();
    while (waitingForOpen.length) waitingForOpen.shift()();
    clearInterval(pingTimer);
    pingTimer = setInterval(() => rawSend({ type: 'ping' }), PING_EVERY_MS);
  }

  function sendJoin(roomId, r) {
    const frame = { type: 'join', roomId, ref: 'join:' + roomId };
    // With sinceRev, `since` (the last seq seen) tells the daemon which replayed
    // messages are new to us (`message`) and which are changes (`message_updated`).
    if (r.lastRev != null) frame.sinceRev = r.lastRev;
    if (r.lastSeq != null) frame.since = r.lastSeq;
    rawSend(frame);
  }

  function newRoom(lastSeq, lastRev) {
    return { lastSeq, lastRev, joined: false, rejoining: false, messages: new Map() };
  }

  /** Stores a message's state unless a newer one (higher rev) is held; emits it. */
  function upsert(roomId, state, isNew) {
    const r = rooms.get(roomId);
    if (!r || !state || state.id == null) return;
    const held = r.messages.get(state.id);
    if (held && held.rev != null && state.rev != null && held.rev > state.rev) return;
    const merged = held ? Object.assign({}, held, state) : Object.assign({}, state);
    r.messages.set(state.id, merged);
    noteSeq(roomId, state.seq);
    emit('message_state', { roomId, message: merged, isNew: isNew && !held });
  }

  /** Whether a stream frame continues the room's chain. A frame already seen is
   *  dropped; one whose `prevRev` is not the last rev seen means a change was missed:
   *  the room is re-joined from that rev (frames that do not continue the chain are
   *  dropped until the replay, which does, arrives). */
  function follows(roomId, frame) {
    const r = rooms.get(roomId);
    if (!r || typeof frame.rev !== 'number') return true; // a `since` replay: no chain
    if (r.lastRev == null) { r.lastRev = frame.rev; return true; }
    if (frame.rev <= r.lastRev) return false;
    if (frame.prevRev !== r.lastRev) {
      if (!r.rejoining) {
        r.rejoining = true;
        r.joined = false;
        emit('gap', { roomId, lastRev: r.lastRev, prevRev: frame.prevRev });
        if (state === 'open') sendJoin(roomId, r);
      }
      return false;
    }
    r.lastRev = frame.rev;
    return true;
  }

  async function loadLatest(roomId) {
    const r = rooms.get(roomId);
    if (!r) return;
    r.messages.clear();
    let reply;
    try {
      reply = await client.request({ type: 'history', roomId, limit: HISTORY_PAGE });
    } catch (e) {
      return; // disconnected or refused: the next join resumes or says behind again
    }
    // Newest first on the wire; stored oldest first.
    const page = (reply.messages || []).slice().reverse();
    for (const m of page) upsert(roomId, m, false);
    emit('behind', { roomId, messages: client.messages(roomId) });
  }

  function flushOutbox() {
    if (state !== 'open') return;
    for (const item of outbox.values()) {
      if (item.sent) continue;
      item.sent = rawSend({
        type: 'message', roomId: item.roomId, message: item.message,
        clientId: item.clientId, ref: item.ref,
      });
    }
  }

  function noteSeq(roomId, seq) {
    const r = rooms.get(roomId);
    if (r && typeof seq === 'number' && (r.lastSeq == null || seq > r.lastSeq)) r.lastSeq = seq;
  }

  function settleOutbox(clientId, result) {
    const item = outbox.get(clientId);
    if (!item) return;
    outbox.delete(clientId);
    emit('outbox', { clientId, roomId: item.roomId, status: 'sent', result });
  }

  function handleFrame(frame) {
    switch (frame.type) {
      case 'authenticated':
        onAuthenticated(frame);
        break;
      case 'joined': {
        const r = rooms.get(frame.roomId);
        if (r) {
          r.joined = true;
          r.rejoining = false;
          // The live stream goes on from here: its first frame's prevRev is lastRev.
          if (typeof frame.lastRev === 'number') r.lastRev = frame.lastRev;
          if (frame.behind) {
            if (typeof frame.lastSeq === 'number') r.lastSeq = frame.lastSeq;
            loadLatest(frame.roomId);
          } else if (r.lastSeq == null && typeof frame.lastSeq === 'number') {
            // Joined live-only: later resumes start from the seq at subscription time.
            r.lastSeq = frame.lastSeq;
          }
        }
        break;
      }
      case 'message':
        if (frame.message) {
          if (!follows(frame.roomId, frame)) return;
          upsert(frame.roomId, frame.message, true);
          if (frame.message.client_id && user && String(frame.message.user_id) === String(user.id)) {
            settleOutbox(frame.message.client_id, frame.message);
          }
        }
        break;
      case 'message_updated':
        if (!follows(frame.roomId, frame)) return;
        upsert(frame.roomId, frame.message, false);
        break;
      case 'message_deleted': {
        // From a daemon of the earlier protocol: ids only; the state is a deletion.
        const m = frame.message || {};
        upsert(frame.roomId, Object.assign({}, m, {
          message: '', deleted_at: m.deleted_at || new Date().toISOString(),
        }), false);
        break;
      }
      case 'resync': {
        // The daemon skipped the room ahead (too far behind after losing its database
        // connection): re-join from the last rev seen; the daemon will say `behind`.
        const r = rooms.get(frame.roomId);
        if (r && !r.rejoining) {
          r.rejoining = true;
          r.joined = false;
          emit('gap', { roomId: frame.roomId, lastRev: r.lastRev, prevRev: frame.lastRev });
          if (state === 'open') sendJoin(frame.roomId, r);
        }
        break;
      }
      case 'read':
      case 'member_joined':
      case 'member_left':
        if (!follows(frame.roomId, frame)) return;
        break;
      case 'ack':
        if (typeof frame.ref === 'string' && frame.ref.startsWith('msg:')) {
          settleOutbox(frame.ref.slice(4), frame);
        }
        break;
      case 'room_left':
        rooms.delete(frame.roomId);
        break;
      case 'error':
        handleError(frame);
        break;
      default:
    }
    if (frame.ref != null && pending.has(frame.ref)) {
      const p = pending.get(frame.ref);
      pending.delete(frame.ref);
      clearTimeout(p.timer);
      if (frame.type === 'error') p.reject(chatError(frame.code, frame.message, frame));
      else p.resolve(frame);
    }
    emit(frame.type, frame);
  }

  function handleError(frame) {
    const ref = typeof frame.ref === 'string' ? frame.ref : '';
    if (ref === 'auth') {
      // A refused token: stop, the host app must log in again.
      stopped = true;
      emit('auth_failed', frame);
      if (socket) socket.close(1000);
      return;
    }
    if (ref.startsWith('join:')) {
      const roomId = Number(ref.slice(5));
      if (frame.code === 'forbidden' || frame.code === 'not_found') rooms.delete(roomId);
      return;
    }
    if (ref.startsWith('msg:')) {
      const clientId = ref.slice(4);
      const item = outbox.get(clientId);
      if (!item) return;
      if (canResend(frame.code)) {
        // rate_limited / internal: try again a little later on this connection.
        item.sent = false;
        setTimeout(flushOutbox, 2000);
      } else {
        outbox.delete(clientId);
        emit('send_failed', { clientId, roomId: item.roomId, code: frame.code, message: frame.message });
      }
    }
  }

  const client = {
    get state() { return state; },
    get user() { return user; },
    backoffDelay,

    on(type, fn) {
      if (!listeners.has(type)) listeners.set(type, new Set());
      listeners.get(type).add(fn);
      return () => listeners.get(type).delete(fn);
    },

    connect() {
      if (!stopped) return client;
      stopped = false;
      attempt = 0;
      open();
      return client;
    },

    /** Closes for good (logout). Pending requests fail; the outbox is dropped. */
    close() {
      stopped = true;
      clearTimeout(retryTimer);
      clearInterval(pingTimer);
      outbox.clear();
      rooms.clear();
      if (socket) socket.close(1000);
      else setState('closed');
    },

    /** Sends `frame` with a fresh ref and resolves with the reply carrying that ref
     *  (rejects on an `error` reply). Waits for the connection if it is down. */
    request(frame, timeoutMs = REQUEST_TIMEOUT_MS) {
      return new Promise((resolve, reject) => {
        const ref = 'r' + nextRef++;
        const send = () => {
          const timer = setTimeout(() => {
            pending.delete(ref);
            reject(chatError('timeout', 'no reply from pgchat'));
          }, timeoutMs);
          pending.set(ref, { resolve, reject, timer });
          if (!rawSend(Object.assign({}, frame, { ref }))) {
            clearTimeout(timer);
            pending.delete(ref);
            reject(chatError('disconnected', 'not connected'));
          }
        };
        if (state === 'open') send();
        else if (stopped) reject(chatError('closed', 'chat is closed'));
        else waitingForOpen.push(send);
      });
    },

    /** Fire-and-forget frame (typing, read); dropped while disconnected. */
    send(frame) {
      return state === 'open' && rawSend(frame);
    },

    /** Subscribes to a room and keeps it subscribed across reconnects. `since`: replay
     *  messages after this seq; `sinceRev`: replay what changed after this rev (omit
     *  both for live only). */
    joinRoom(roomId, since, sinceRev) {
      let r = rooms.get(roomId);
      if (!r) {
        r = newRoom(since == null ? null : since, sinceRev == null ? null : sinceRev);
        rooms.set(roomId, r);
      } else if (r.joined) {
        return;
      }
      if (state === 'open') sendJoin(roomId, r);
    },

    /** Stops receiving a room (membership is unchanged). */
    leaveRoom(roomId) {
      if (rooms.delete(roomId)) client.send({ type: 'leave', roomId });
    },

    /** Records a seq the caller has seen (e.g. from history), so resume starts after it. */
    noteSeq,

    isSubscribed(roomId) { return rooms.has(roomId); },

    /** The room's messages this client holds, by seq: each one's latest state (a
     *  deleted one has `deleted_at` set and no text). */
    messages(roomId) {
      const r = rooms.get(roomId);
      if (!r) return [];
      return Array.from(r.messages.values()).sort((a, b) => a.seq - b.seq);
    },

    /** The last stream rev seen in a room (what a resume starts after), or null. */
    lastRev(roomId) {
      const r = rooms.get(roomId);
      return r ? r.lastRev : null;
    },

    /** Queues a chat message and sends it now if connected. Returns its clientId. */
    sendMessage(roomId, message) {
      const clientId = newClientId();
      outbox.set(clientId, { clientId, roomId, message, ref: 'msg:' + clientId, sent: false });
      flushOutbox();
      return clientId;
    },

    /** Messages not yet acknowledged, oldest first. */
    pendingMessages() {
      return Array.from(outbox.values(), ({ clientId, roomId, message }) => ({ clientId, roomId, message }));
    },
  };
  return client;
}
