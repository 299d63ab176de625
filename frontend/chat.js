// The chat feature for an Alpine.js app (plan 000 §3): state and methods to merge into
// the host app's x-data object. The host app calls `initChat()` from `init()` and
// `applyToken()`, and `logoutChat()` from `logout()`; see app.js.
//
// Everything goes over the pgchat socket (rooms, create/join, history, send), so the
// module needs only the token and pgchat's URL. Messages are kept per room keyed by seq
// (pending ones by clientId), so a replayed or re-delivered message never shows twice.
(function (root) {
  'use strict';

  const TYPING_SHOWN_MS = 6000; // a typing line disappears unless refreshed
  const TYPING_SEND_EVERY_MS = 3000; // how often "still typing" is re-sent
  const TYPING_IDLE_MS = 4000; // no keystroke for this long: "stopped typing"
  const HISTORY_PAGE = 50;
  const MAX_CHARS = 5000;

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const sameId = (a, b) => a != null && b != null && String(a) === String(b);

  function chatFeature() {
    return {
      // Plan state.
      chatClient: null,
      chatGeneration: 0,
      chatConnected: false,
      chatRooms: [],
      currentRoomId: null,
      currentRoomMessages: [],
      typingUsers: {}, // roomId -> { userId -> { name, until } }
      messageInput: '',
      showChat: false,
      // Supporting state.
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
      typingSentAt: 0,
      typingIdleTimer: null,
      retryCountdown: null,
      chatVisibilityHooked: false,

      get currentRoom() {
        return this.chatRooms.find((r) => sameId(r.id, this.currentRoomId)) || null;
      },
      get sortedMessages() {
        return this.currentRoomMessages;
      },
      get totalUnread() {
        return this.chatRooms.reduce((n, r) => n + (r.unread_count || 0), 0);
      },
      get typingLine() {
        const now = Date.now();
        const entries = Object.entries(this.typingUsers[this.currentRoomId] || {})
          .filter(([id, t]) => t.until > now && !sameId(id, this.chatUser && this.chatUser.id))
          .map(([, t]) => t.name);
        if (entries.length === 0) return '';
        if (entries.length === 1) return `${entries[0]} is typing…`;
        if (entries.length === 2) return `${entries[0]} and ${entries[1]} are typing…`;
        return `${entries[0]}, ${entries[1]} and ${entries.length - 2} more are typing…`;
      },
      get chatStatusText() {
        switch (this.chatStatus) {
          case 'connected': return 'Connected';
          case 'connecting': return 'Connecting…';
          case 'reconnecting':
            return this.chatRetryInSec > 0 ? `Reconnecting in ${this.chatRetryInSec}s…` : 'Reconnecting…';
          default: return 'Offline';
        }
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
        const token = this.token || root.localStorage.getItem('token');
        if (!token) return;
        if (this.chatClient) this.chatClient.close();
        const client = root.createChatClient(token, root.pgchatDefaultUrl());
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
        on('authenticated', (f) => {
          this.chatUser = f.user;
          this.chatError = '';
          this.loadChatRooms();
        });
        on('auth_failed', (f) => { this.chatError = `Sign-in refused (${f.code}). Please log in again.`; });
        on('rooms', (f) => this.mergeRooms(f.rooms || []));
        on('room', (f) => f.room && this.addRoom(f.room));
        on('room_left', (f) => this.removeRoom(f.roomId));
        on('joined', (f) => {
          this.onlineUsers[f.roomId] = Object.fromEntries((f.online || []).map((u) => [u.id, u.name]));
        });
        on('user_joined', (f) => {
          this.onlineUsers[f.roomId] = Object.assign({}, this.onlineUsers[f.roomId], { [f.user.id]: f.user.name });
        });
        on('user_left', (f) => {
          const users = Object.assign({}, this.onlineUsers[f.roomId]);
          delete users[f.user.id];
          this.onlineUsers[f.roomId] = users;
          this.setTyping(f.roomId, f.user, false);
        });
        on('message', (f) => f.message && this.receiveMessage(f.roomId, f.message));
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
          this.chatError = `Message not sent: ${f.message || f.code}`;
          this.refreshCurrentMessages();
        });
        on('error', (f) => { if (f.ref == null || String(f.ref).startsWith('join:')) this.chatError = f.message || f.code; });
        this.chatTimers.forEach(clearInterval);
        this.chatTimers = [setInterval(() => this.pruneTyping(), 1000)];
        if (!this.chatVisibilityHooked) {
          this.chatVisibilityHooked = true;
          root.document.addEventListener('visibilitychange', () => {
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

      async loadChatRooms() {
        try {
          const reply = await this.chatClient.request({ type: 'rooms' });
          this.mergeRooms(reply.rooms || []);
        } catch (e) {
          if (e.code !== 'disconnected') this.chatError = `Could not load rooms: ${e.message}`;
        }
      },

      // The room list from the server is authoritative for counts; rooms missing from it
      // were left elsewhere. Every room is subscribed, so unread counts and online dots
      // stay live for rooms that are not open.
      mergeRooms(list) {
        const seen = new Set();
        for (const r of list) {
          seen.add(String(r.id));
          const room = this.addRoom(r);
          room.unread_count = sameId(r.id, this.currentRoomId) && this.showChat ? 0 : (r.unread_count || 0);
          room.countedSeq = Math.max(room.countedSeq || 0, r.last_seq || 0);
        }
        for (const room of this.chatRooms.slice()) {
          if (!seen.has(String(room.id))) this.removeRoom(room.id);
        }
        this.chatRooms.sort((a, b) => (b.lastActivity || '').localeCompare(a.lastActivity || ''));
        if (this.currentRoomId != null && this.showChat) this.markRead(this.currentRoomId);
      },

      addRoom(r) {
        let room = this.chatRooms.find((x) => sameId(x.id, r.id));
        if (!room) {
          room = {
            id: r.id, unread_count: 0, last_read_seq: r.last_read_seq || 0,
            countedSeq: r.last_seq || 0, readSent: r.last_read_seq || 0, preview: '',
          };
          this.chatRooms.push(room);
          room = this.chatRooms[this.chatRooms.length - 1]; // the reactive proxy
        }
        Object.assign(room, {
          name: r.name, description: r.description || '',
          member_count: r.member_count != null ? r.member_count : room.member_count,
          last_seq: Math.max(room.last_seq || 0, r.last_seq || 0),
          lastActivity: r.last_message_at || room.lastActivity || r.created_at || '',
        });
        if (this.chatClient && !this.chatClient.isSubscribed(r.id)) {
          this.chatClient.joinRoom(r.id, r.last_seq || 0);
        }
        return room;
      },

      removeRoom(roomId) {
        this.chatRooms = this.chatRooms.filter((r) => !sameId(r.id, roomId));
        delete this.chatMessagesByRoom[roomId];
        delete this.onlineUsers[roomId];
        if (this.chatClient) this.chatClient.leaveRoom(roomId);
        if (sameId(this.currentRoomId, roomId)) {
          this.currentRoomId = null;
          this.currentRoomMessages = [];
        }
      },

      async createRoom(name, description) {
        name = (name || '').trim();
        if (!name) return;
        try {
          const reply = await this.chatClient.request({ type: 'create_room', name, description: (description || '').trim() });
          this.newRoomName = '';
          this.newRoomDescription = '';
          this.addRoom(reply.room);
          await this.enterRoom(reply.room.id);
        } catch (e) {
          this.chatError = `Could not create the room: ${e.message}`;
        }
      },

      async joinRoomById(id) {
        const roomId = Number(String(id).trim().replace(/^#/, ''));
        if (!Number.isInteger(roomId) || roomId <= 0) {
          this.chatError = 'A room id is a number, like 12.';
          return;
        }
        try {
          const reply = await this.chatClient.request({ type: 'join_room', roomId });
          this.joinRoomIdInput = '';
          this.addRoom(reply.room);
          await this.enterRoom(reply.room.id);
        } catch (e) {
          this.chatError = e.code === 'not_found' ? `There is no room #${roomId}.` : `Could not join: ${e.message}`;
        }
      },

      async leaveCurrentRoom() {
        const roomId = this.currentRoomId;
        if (roomId == null) return;
        try {
          await this.chatClient.request({ type: 'leave_room', roomId });
          this.removeRoom(roomId);
        } catch (e) {
          this.chatError = `Could not leave: ${e.message}`;
        }
      },

      async enterRoom(roomId) {
        this.stopTyping();
        this.currentRoomId = roomId;
        this.chatError = '';
        this.refreshCurrentMessages();
        this.markRead(roomId);
        this.$nextTick(() => this.$refs.chatInput && this.$refs.chatInput.focus());
        try {
          const reply = await this.chatClient.request({ type: 'history', roomId, limit: HISTORY_PAGE });
          for (const m of reply.messages || []) this.storeMessage(roomId, m);
          if (sameId(this.currentRoomId, roomId)) {
            this.refreshCurrentMessages(true);
            this.markRead(roomId);
          }
        } catch (e) {
          if (e.code !== 'disconnected') this.chatError = `Could not load history: ${e.message}`;
        }
      },

      closeRoom() {
        this.stopTyping();
        this.currentRoomId = null;
        this.currentRoomMessages = [];
      },

      storeMessage(roomId, m, pending) {
        const box = this.chatMessagesByRoom[roomId] || (this.chatMessagesByRoom[roomId] = {});
        if (pending) { box['c:' + m.client_id] = m; return true; }
        if (box['s:' + m.seq]) return false;
        if (m.client_id) delete box['c:' + m.client_id];
        box['s:' + m.seq] = Object.assign({ key: 's:' + m.seq }, m);
        if (this.chatClient) this.chatClient.noteSeq(roomId, m.seq);
        return true;
      },

      receiveMessage(roomId, m) {
        if (!this.storeMessage(roomId, m)) return;
        const room = this.chatRooms.find((r) => sameId(r.id, roomId));
        if (room) {
          room.preview = `${m.user_name}: ${m.message}`.slice(0, 80);
          room.lastActivity = m.created_at;
          room.last_seq = Math.max(room.last_seq || 0, m.seq);
          const mine = sameId(m.user_id, this.chatUser && this.chatUser.id);
          if (m.seq > (room.countedSeq || 0)) {
            room.countedSeq = m.seq;
            if (!mine && m.seq > (room.last_read_seq || 0)) room.unread_count = (room.unread_count || 0) + 1;
          }
          this.setTyping(roomId, { id: m.user_id, name: m.user_name }, false);
        }
        if (sameId(roomId, this.currentRoomId)) {
          this.refreshCurrentMessages();
          this.markRead(roomId);
        }
      },

      // Rebuilds the current room's list: committed messages by seq, then pending ones.
      refreshCurrentMessages(forceScroll) {
        const box = this.chatMessagesByRoom[this.currentRoomId] || {};
        const all = Object.values(box);
        const done = all.filter((m) => !m.key.startsWith('c:')).sort((a, b) => a.seq - b.seq);
        const waiting = all.filter((m) => m.key.startsWith('c:')).sort((a, b) => a.sentAt - b.sentAt);
        const me = this.chatUser && this.chatUser.id;
        let prev = null;
        this.currentRoomMessages = done.concat(waiting).map((m) => {
          const at = new Date(m.created_at);
          const view = Object.assign({}, m, {
            mine: sameId(m.user_id, me),
            time: isNaN(at) ? '' : timeFormat.format(at),
            showHeader: !prev || !sameId(prev.user_id, m.user_id) || at - new Date(prev.created_at) > 5 * 60 * 1000,
          });
          prev = m;
          return view;
        });
        this.$nextTick(() => {
          const el = this.$refs.chatMessages;
          if (!el) return;
          const nearBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 160;
          if (forceScroll || nearBottom) el.scrollTop = el.scrollHeight;
        });
      },

      markRead(roomId) {
        const room = this.chatRooms.find((r) => sameId(r.id, roomId));
        if (!room || !this.showChat || root.document.visibilityState === 'hidden') return;
        room.unread_count = 0;
        const seq = room.last_seq || 0;
        if (seq > (room.readSent || 0) && this.chatClient && this.chatClient.send({ type: 'read', roomId, seq })) {
          room.readSent = seq;
          room.last_read_seq = Math.max(room.last_read_seq || 0, seq);
        }
      },

      sendChatMessage() {
        const text = this.messageInput.trim();
        if (!text || this.currentRoomId == null || !this.chatClient) return;
        if ([...text].length > MAX_CHARS) {
          this.chatError = `A message can have at most ${MAX_CHARS} characters.`;
          return;
        }
        const roomId = this.currentRoomId;
        const clientId = this.chatClient.sendMessage(roomId, text);
        const me = this.chatUser || {};
        this.storeMessage(roomId, {
          key: 'c:' + clientId, client_id: clientId, user_id: me.id, user_name: me.name || 'me',
          message: text, created_at: new Date().toISOString(), sentAt: Date.now(), pending: true,
        }, true);
        this.messageInput = '';
        this.stopTyping();
        this.refreshCurrentMessages(true);
      },

      onComposerKeydown(ev) {
        // Enter sends, Shift+Enter is a new line; never while an IME is composing.
        if (ev.key !== 'Enter' || ev.shiftKey || ev.isComposing || ev.keyCode === 229) return;
        ev.preventDefault();
        this.sendChatMessage();
      },

      handleTyping() {
        if (this.currentRoomId == null || !this.chatClient) return;
        if (!this.messageInput) { this.stopTyping(); return; }
        const now = Date.now();
        if (now - this.typingSentAt > TYPING_SEND_EVERY_MS) {
          this.typingSentAt = now;
          this.chatClient.send({ type: 'typing', roomId: this.currentRoomId, isTyping: true });
        }
        clearTimeout(this.typingIdleTimer);
        this.typingIdleTimer = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
      },

      stopTyping() {
        clearTimeout(this.typingIdleTimer);
        if (this.typingSentAt && this.currentRoomId != null && this.chatClient) {
          this.chatClient.send({ type: 'typing', roomId: this.currentRoomId, isTyping: false });
        }
        this.typingSentAt = 0;
      },

      setTyping(roomId, user, isTyping) {
        const room = Object.assign({}, this.typingUsers[roomId]);
        if (isTyping) room[user.id] = { name: user.name, until: Date.now() + TYPING_SHOWN_MS };
        else if (room[user.id]) delete room[user.id];
        else return;
        this.typingUsers[roomId] = room;
      },

      pruneTyping() {
        const now = Date.now();
        for (const [roomId, users] of Object.entries(this.typingUsers)) {
          if (Object.values(users).some((t) => t.until <= now)) {
            this.typingUsers[roomId] = Object.fromEntries(Object.entries(users).filter(([, t]) => t.until > now));
          }
        }
      },

      toggleChat() {
        this.showChat = !this.showChat;
        if (this.showChat && this.currentRoomId != null) {
          this.markRead(this.currentRoomId);
          this.refreshCurrentMessages(true);
        }
      },
    };
  }

  /** Adds the chat feature to a host app object, keeping its getters intact. */
  function withChat(app) {
    return Object.defineProperties(app, Object.getOwnPropertyDescriptors(chatFeature()));
  }

  root.chatFeature = chatFeature;
  root.withChat = withChat;
})(window);
