// The chat feature's state and connection (plan 000 §3): what `withChat` merges into the
// host app's x-data object. The host calls `initChat()` from `init()` and `applyToken()`,
// and `logoutChat()` from `logout()`.
//
// Everything goes over the pgchat socket (rooms, create/join, history, send), so the
// feature needs only the token and pgchat's URL. Rooms are in rooms.js, the open room in
// room-view.js, the message input in composer.js.
import { createChatClient, defaultChatUrl } from '../sdk/index.js';
import { browserLanguages, chooseLanguage, dateFormatters, errorText, supportedLanguage, translate } from '../i18n/index.js';

export const sameId = (a, b) => a != null && b != null && String(a) === String(b);

const formattersByLang = new Map();
export function formattersFor(lang) {
  if (!formattersByLang.has(lang)) formattersByLang.set(lang, dateFormatters(lang));
  return formattersByLang.get(lang);
}

/** State and connection methods. `options`: `lang` (the host's language setting), `url`
 *  (pgchat's WebSocket URL; default `PGCHAT_URL`, else this origin's `/ws`). */
export function chatFeature(options = {}) {
  // The element the markup was mounted in; kept out of Alpine's reactive state.
  let chatRoot = null;
  return {
    // Plan state.
    chatClient: null,
    chatConnected: false,
    chatRooms: [],
    currentRoomId: null,
    currentRoomMessages: [],
    typingUsers: {}, // roomId -> { userId -> { name, until } }
    messageInput: '',
    showChat: false,
    // Supporting state.
    chatLang: chooseLanguage({ option: options.lang, navigatorLanguages: browserLanguages() }),
    chatNow: Date.now(), // ticks so relative times move on
    chatGeneration: 0,
    chatStatus: 'offline', // offline | connecting | connected | reconnecting
    chatRetryInSec: 0,
    chatUser: null,
    chatError: '',
    onlineUsers: {}, // roomId -> { userId -> name }
    newRoomName: '',
    newRoomDescription: '',
    joinRoomIdInput: '',
    chatMessagesByRoom: {}, // roomId -> { key -> message }
    chatTimers: [],
    retryCountdown: null,
    chatVisibilityHooked: false,

    get currentRoom() {
      return this.chatRooms.find((r) => sameId(r.id, this.currentRoomId)) || null;
    },
    get totalUnread() {
      return this.chatRooms.reduce((n, r) => n + (r.unread_count || 0), 0);
    },
    get chatStatusText() {
      switch (this.chatStatus) {
        case 'connected': return this.t('conn.connected');
        case 'connecting': return this.t('conn.connecting');
        case 'reconnecting':
          return this.chatRetryInSec > 0 ? this.t('conn.reconnectingIn', { s: this.chatRetryInSec }) : this.t('conn.reconnecting');
        default: return this.t('conn.offline');
      }
    },

    /** The catalogue's text for `key` in the chat's language. */
    t(key, params) {
      return translate(this.chatLang, key, params);
    },
    /** The text for an error (a rejected request or an `error` frame) by its code. */
    chatErrorText(e) {
      return errorText(this.chatLang, (e && e.code) || 'internal');
    },
    chatRelative(at) {
      return at ? formattersFor(this.chatLang).relative(new Date(at), new Date(this.chatNow)) : '';
    },

    /** Called by the markup on its root: the `lang` attribute there is the host's
     *  setting and wins over the option and the browser's languages. */
    chatAttach(el) {
      chatRoot = el;
      this.chatLang = chooseLanguage({
        attribute: el && el.getAttribute('lang'), option: options.lang, navigatorLanguages: browserLanguages(),
      });
      if (el) el.setAttribute('lang', this.chatLang);
    },

    /** Switches the chat's language at run time ("en" or "ja"); returns the one in use. */
    setChatLanguage(lang) {
      const chosen = supportedLanguage(lang);
      if (!chosen) return this.chatLang;
      this.chatLang = chosen;
      if (chatRoot) chatRoot.setAttribute('lang', chosen);
      this.refreshCurrentMessages();
      return chosen;
    },

    onlineCount(roomId) {
      const me = this.chatUser && this.chatUser.id;
      return Object.keys(this.onlineUsers[roomId] || {}).filter((id) => !sameId(id, me)).length;
    },
    onlineNames(roomId) {
      const me = this.chatUser && this.chatUser.id;
      return Object.entries(this.onlineUsers[roomId] || {})
        .filter(([id]) => !sameId(id, me)).map(([, name]) => name);
    },

    initChat() {
      const token = this.token || globalThis.localStorage.getItem('token');
      if (!token) return;
      if (this.chatClient) this.chatClient.close();
      const client = createChatClient(token, options.url || defaultChatUrl());
      // Events of a replaced client are ignored. (Compared by generation: Alpine wraps
      // the stored client in a proxy, so identity comparison would never match.)
      const generation = ++this.chatGeneration;
      this.chatClient = client;
      const on = (type, fn) => client.on(type, (f) => { if (this.chatGeneration === generation) fn(f); });
      on('state', (s) => {
        this.chatStatus = s.state === 'open' ? 'connected' : s.state === 'closed' ? 'offline' : s.state;
        this.chatConnected = s.state === 'open';
        this.startRetryCountdown(s.retryInMs || 0);
      });
      // While disconnected nobody's presence is known; `joined` refills it on resume.
      on('disconnected', () => { this.onlineUsers = {}; this.typingUsers = {}; });
      on('authenticated', (f) => {
        this.chatUser = f.user;
        this.chatError = '';
        this.loadChatRooms();
      });
      on('auth_failed', (f) => { this.chatError = this.t('failure.auth', { reason: this.chatErrorText(f) }); });
      on('rooms', (f) => this.mergeRooms(f.rooms || []));
      on('room', (f) => {
        if (!f.room) return;
        this.addRoom(f.room);
        this.refreshRoomsSoon(); // counts and last_seq for a room added elsewhere
      });
      on('room_left', (f) => this.removeRoom(f.roomId));
      on('joined', (f) => {
        this.onlineUsers[f.roomId] = Object.fromEntries((f.online || []).map((u) => [u.id, u.name]));
      });
      on('user_joined', (f) => {
        this.onlineUsers[f.roomId] = Object.assign({}, this.onlineUsers[f.roomId], { [f.user.id]: f.user.name });
        // Someone new may have joined the room itself: refresh member counts.
        this.refreshRoomsSoon();
      });
      on('user_left', (f) => {
        const users = Object.assign({}, this.onlineUsers[f.roomId]);
        delete users[f.user.id];
        this.onlineUsers[f.roomId] = users;
        this.setTyping(f.roomId, f.user, false);
      });
      on('message', (f) => f.message && this.receiveMessage(f.roomId, f.message));
      // Edits and deletions (any later state of a message), and a room reloaded because
      // it was too far behind to replay: the SDK keeps each message's latest state.
      on('message_state', (e) => { if (!e.isNew) this.updateMessage(e.roomId, e.message); });
      on('behind', (e) => this.reloadRoom(e.roomId, e.messages));
      on('typing', (f) => f.user && this.setTyping(f.roomId, f.user, f.isTyping));
      on('read', (f) => {
        const room = this.chatRooms.find((r) => sameId(r.id, f.roomId));
        if (room && f.user && sameId(f.user.id, this.chatUser && this.chatUser.id)) {
          room.last_read_seq = Math.max(room.last_read_seq || 0, f.seq);
          if (f.seq >= (room.countedSeq || 0)) room.unread_count = 0;
        }
      });
      on('send_failed', (f) => {
        const msg = (this.chatMessagesByRoom[f.roomId] || {})['c:' + f.clientId];
        if (msg) { msg.failed = true; msg.pending = false; }
        this.chatError = this.t('failure.send', { reason: this.chatErrorText(f) });
        this.refreshCurrentMessages();
      });
      on('error', (f) => {
        if (f.ref == null || String(f.ref).startsWith('join:')) this.chatError = this.chatErrorText(f);
      });
      this.chatTimers.forEach(clearInterval);
      this.chatTimers = [
        setInterval(() => this.pruneTyping(), 1000),
        setInterval(() => { this.chatNow = Date.now(); }, 30_000),
      ];
      if (!this.chatVisibilityHooked && globalThis.document) {
        this.chatVisibilityHooked = true;
        globalThis.document.addEventListener('visibilitychange', () => {
          if (this.currentRoomId != null) this.markRead(this.currentRoomId);
        });
      }
      client.connect();
    },

    logoutChat() {
      this.chatGeneration += 1;
      if (this.chatClient) this.chatClient.close();
      this.chatTimers.forEach(clearInterval);
      Object.assign(this, {
        chatClient: null, chatConnected: false, chatStatus: 'offline', chatRooms: [],
        currentRoomId: null, currentRoomMessages: [], typingUsers: {}, onlineUsers: {},
        chatMessagesByRoom: {}, chatTimers: [], chatUser: null, messageInput: '',
        showChat: false, chatError: '',
      });
    },

    startRetryCountdown(ms) {
      clearInterval(this.retryCountdown);
      this.chatRetryInSec = Math.ceil(ms / 1000);
      if (ms <= 0) return;
      this.retryCountdown = setInterval(() => {
        this.chatRetryInSec = Math.max(0, this.chatRetryInSec - 1);
        if (this.chatRetryInSec === 0) clearInterval(this.retryCountdown);
      }, 1000);
    },

    toggleChat() {
      this.showChat = !this.showChat;
      // Closing with Escape from inside the overlay: focus goes back to the toggle
      // instead of being lost with the hidden overlay.
      const focused = globalThis.document && globalThis.document.activeElement;
      if (!this.showChat && chatRoot && focused && chatRoot.contains(focused)) {
        const toggle = chatRoot.querySelector('.chat-toggle-btn');
        if (toggle) toggle.focus();
      }
      if (this.showChat && this.currentRoomId != null) {
        this.markRead(this.currentRoomId);
        this.refreshCurrentMessages(true);
      }
    },
  };
}
