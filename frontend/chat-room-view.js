// The open room of the chat (plan 000 §3): entering a room, its messages, read markers,
// sending, and the typing line. Merged into the chat feature by chat.js.
//
// Messages are kept per room keyed by seq (pending ones by clientId), so a message
// replayed after a reconnect, or delivered both live and in history, shows once.
(function (root) {
  'use strict';

  const TYPING_SHOWN_MS = 6000; // a typing line disappears unless refreshed
  const TYPING_SEND_EVERY_MS = 3000; // how often "still typing" is re-sent
  const TYPING_IDLE_MS = 4000; // no keystroke for this long: "stopped typing"
  const HISTORY_PAGE = 50;
  const MAX_CHARS = 5000;

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
  });
  /** "14:05" today, "Nov 20, 14:05" before. */
  function formatTime(at) {
    if (isNaN(at)) return '';
    return at.toDateString() === new Date().toDateString() ? timeFormat.format(at) : dateTimeFormat.format(at);
  }
  const sameId = (a, b) => a != null && b != null && String(a) === String(b);

  /** Methods and getters only; the state they use is declared in chat.js. */
  function chatRoomView() {
    return {
      get sortedMessages() {
        return this.currentRoomMessages;
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

      /** True when the oldest loaded message of the open room is not its first. */
      get canLoadEarlier() {
        const first = this.currentRoomMessages.find((m) => m.seq != null);
        return !!first && first.seq > 1;
      },

      async loadEarlier() {
        const roomId = this.currentRoomId;
        const first = this.currentRoomMessages.find((m) => m.seq != null);
        if (!first) return;
        const el = this.$refs.chatMessages;
        const fromBottom = el ? el.scrollHeight - el.scrollTop : 0;
        try {
          const reply = await this.chatClient.request({ type: 'history', roomId, beforeSeq: first.seq, limit: HISTORY_PAGE });
          for (const m of reply.messages || []) this.storeMessage(roomId, m);
          if (!sameId(roomId, this.currentRoomId)) return;
          this.refreshCurrentMessages();
          // Keep the message the reader was looking at in place.
          this.$nextTick(() => { if (el) el.scrollTop = el.scrollHeight - fromBottom; });
        } catch (e) {
          this.chatError = `Could not load earlier messages: ${e.message}`;
        }
      },

      async enterRoom(roomId) {
        this.stopTyping();
        this.currentRoomId = roomId;
        this.chatError = '';
        this.refreshCurrentMessages();
        this.markRead(roomId);
        this.refreshRoomsSoon(); // fresh member count for the header
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
          const mine = sameId(m.user_id, this.chatUser && this.chatUser.id);
          room.preview = `${mine ? 'You' : m.user_name}: ${m.message}`.slice(0, 80);
          room.lastActivity = m.created_at;
          room.last_seq = Math.max(room.last_seq || 0, m.seq);
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
            time: formatTime(at),
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
        this.$nextTick(() => this.autosizeComposer());
        this.stopTyping();
        this.refreshCurrentMessages(true);
      },

      onComposerKeydown(ev) {
        // Enter sends, Shift+Enter is a new line; never while an IME is composing.
        if (ev.key !== 'Enter' || ev.shiftKey || ev.isComposing || ev.keyCode === 229) return;
        ev.preventDefault();
        this.sendChatMessage();
      },

      /** Grows the composer with its text, up to the CSS max-height. */
      autosizeComposer() {
        const el = this.$refs.chatInput;
        if (!el) return;
        el.style.height = 'auto';
        el.style.height = el.scrollHeight + 2 + 'px';
      },

      handleTyping() {
        this.autosizeComposer();
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
    };
  }

  root.chatRoomView = chatRoomView;
})(window);
