// The chat feature for an Alpine.js app (plan 000 §3): state and methods to merge into
// the host app's x-data object. The host app calls `initChat()` from `init()` and
// `applyToken()`, and `logoutChat()` from `logout()`; see app.js.
//
// Everything goes over the pgchat socket (rooms, create/join, history, send), so the
// module needs only the token and pgchat's URL. This file holds the state, the
// connection and the room list; chat-room-view.js the open room (messages, typing).
(function (root) {
  'use strict';

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
      roomsRefreshTimer: null,
      chatVisibilityHooked: false,

      get currentRoom() {
        return this.chatRooms.find((r) => sameId(r.id, this.currentRoomId)) || null;
      },
      get totalUnread() {
        return this.chatRooms.reduce((n, r) => n + (r.unread_count || 0), 0);
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
        // While disconnected nobody's presence is known; `joined` refills it on resume.
        on('disconnected', () => { this.onlineUsers = {}; this.typingUsers = {}; });
        on('authenticated', (f) => {
          this.chatUser = f.user;
          this.chatError = '';
          this.loadChatRooms();
        });
        on('auth_failed', (f) => { this.chatError = `Sign-in refused (${f.code}). Please log in again.`; });
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

      refreshRoomsSoon() {
        clearTimeout(this.roomsRefreshTimer);
        this.roomsRefreshTimer = setTimeout(() => this.chatConnected && this.loadChatRooms(), 800);
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
          // A room pushed because we were added elsewhere may not carry last_seq: then
          // subscribe live-only; its history loads when it is opened.
          this.chatClient.joinRoom(r.id, typeof r.last_seq === 'number' ? r.last_seq : undefined);
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

      toggleChat() {
        this.showChat = !this.showChat;
        if (this.showChat && this.currentRoomId != null) {
          this.markRead(this.currentRoomId);
          this.refreshCurrentMessages(true);
        }
      },
    };
  }

  const merge = (target, source) => Object.defineProperties(target, Object.getOwnPropertyDescriptors(source));

  /** Adds the chat feature to a host app object, keeping getters intact. */
  function withChat(app) {
    return merge(merge(app, chatFeature()), root.chatRoomView());
  }

  root.chatFeature = chatFeature;
  root.withChat = withChat;
})(window);
