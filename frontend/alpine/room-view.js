// The open room (plan 000 §3): entering a room, its messages with day separators and
// system notes, history pages, read markers. Methods only; the state they use is
// declared in feature.js.
//
// Messages are kept per room keyed by seq (pending ones by clientId), so a message
// replayed after a reconnect, or delivered both live and in history, shows once.
import { formattersFor, sameId } from './feature.js';

const HISTORY_PAGE = 50;
const GROUP_WITHIN_MS = 5 * 60 * 1000; // one header for a sender's messages this close
let noteCounter = 0;

export function chatRoomView() {
  return {
    get sortedMessages() {
      return this.currentRoomMessages;
    },

    /** True when the oldest loaded message of the open room is not its first. */
    get canLoadEarlier() {
      const first = this.currentRoomMessages.find((m) => m.seq != null);
      return !!first && first.seq > 1;
    },

    /** "You: …" / "Alice: …" under a room's name, in the current language. */
    roomPreview(room) {
      const last = room.last;
      if (!last) return room.description || this.t('rooms.fallbackPreview', { id: room.id });
      const text = last.text.slice(0, 80);
      return last.mine ? this.t('rooms.previewMine', { text }) : this.t('rooms.previewOther', { name: last.name, text });
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
        this.chatError = this.t('failure.earlier', { reason: this.chatErrorText(e) });
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
        if (e.code !== 'disconnected') this.chatError = this.t('failure.history', { reason: this.chatErrorText(e) });
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

    /** A message's later state (edited, deleted): replaces the one shown, if shown. */
    updateMessage(roomId, m) {
      const box = this.chatMessagesByRoom[roomId];
      const held = box && box['s:' + m.seq];
      if (!held) return;
      box['s:' + m.seq] = Object.assign({}, held, m, { key: held.key });
      if (sameId(roomId, this.currentRoomId)) this.refreshCurrentMessages();
    },

    /** The room was too far behind to replay: show the latest page instead of what was
     *  held (pending messages stay). */
    reloadRoom(roomId, messages) {
      const box = this.chatMessagesByRoom[roomId] || {};
      const pending = Object.fromEntries(Object.entries(box).filter(([k]) => k.startsWith('c:')));
      this.chatMessagesByRoom[roomId] = pending;
      for (const m of messages) this.storeMessage(roomId, m);
      if (sameId(roomId, this.currentRoomId)) this.refreshCurrentMessages();
    },

    /** A line from the chat itself ("You joined this room."), shown after the room's
     *  messages known now. Kept on this page only. */
    addSystemNote(roomId, textKey) {
      const room = this.chatRooms.find((r) => sameId(r.id, roomId));
      const box = this.chatMessagesByRoom[roomId] || (this.chatMessagesByRoom[roomId] = {});
      const key = 'n:' + ++noteCounter;
      box[key] = { key, system: true, textKey, afterSeq: (room && room.last_seq) || 0, created_at: new Date().toISOString() };
    },

    receiveMessage(roomId, m) {
      // Already shown (from history, or replayed again): keep its latest state.
      if (!this.storeMessage(roomId, m)) { this.updateMessage(roomId, m); return; }
      const room = this.chatRooms.find((r) => sameId(r.id, roomId));
      if (room) {
        const mine = sameId(m.user_id, this.chatUser && this.chatUser.id);
        room.last = { mine, name: m.user_name, text: m.message };
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

    // Rebuilds the current room's list: committed messages and system notes by seq, then
    // pending ones; a day separator before the first entry of each day.
    refreshCurrentMessages(forceScroll) {
      const box = this.chatMessagesByRoom[this.currentRoomId] || {};
      const all = Object.values(box);
      const order = (m) => (m.system ? m.afterSeq + 0.5 : m.seq);
      const done = all.filter((m) => !m.key.startsWith('c:')).sort((a, b) => order(a) - order(b));
      const waiting = all.filter((m) => m.key.startsWith('c:')).sort((a, b) => a.sentAt - b.sentAt);
      const me = this.chatUser && this.chatUser.id;
      const fmt = formattersFor(this.chatLang);
      const now = new Date();
      let prev = null;
      let prevDay = null;
      this.currentRoomMessages = done.concat(waiting).map((m) => {
        const at = new Date(m.created_at);
        const day = fmt.dayKey(at);
        const view = Object.assign({}, m, {
          mine: sameId(m.user_id, me),
          time: fmt.messageTime(at, now),
          dayLabel: day !== prevDay ? fmt.dayLabel(at, now) : '',
          showHeader: !prev || prev.system || !sameId(prev.user_id, m.user_id) || at - new Date(prev.created_at) > GROUP_WITHIN_MS,
        });
        prev = m;
        prevDay = day;
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
      if (!room || !this.showChat || globalThis.document.visibilityState === 'hidden') return;
      room.unread_count = 0;
      const seq = room.last_seq || 0;
      if (seq > (room.readSent || 0) && this.chatClient && this.chatClient.send({ type: 'read', roomId, seq })) {
        room.readSent = seq;
        room.last_read_seq = Math.max(room.last_read_seq || 0, seq);
      }
    },
  };
}
