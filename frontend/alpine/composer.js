// The message input (plan 000 §3): Enter sends, Shift+Enter is a new line, and an IME
// composition never sends; typing indicators both ways. Merged by withChat.
import { sameId } from './feature.js';

const TYPING_SHOWN_MS = 6000; // a typing line disappears unless refreshed
const TYPING_SEND_EVERY_MS = 3000; // how often "still typing" is re-sent
const TYPING_IDLE_MS = 4000; // no keystroke for this long: "stopped typing"
const MAX_CHARS = 5000;

/** Whether this Enter keydown belongs to an IME composition (confirming a conversion),
 *  not to the message. Browsers differ: Chromium and Firefox mark the keydown itself
 *  (`isComposing`, keyCode 229); Safari sends `compositionend` first, then a keydown
 *  with keyCode 229; so the composition is also tracked from its events. */
export function isImeEnter(ev, composing) {
  return composing || ev.isComposing || ev.keyCode === 229;
}

export function chatComposer() {
  return {
    typingSentAt: 0,
    typingIdleTimer: null,
    composing: false,

    get typingLine() {
      const now = Date.now();
      const names = Object.entries(this.typingUsers[this.currentRoomId] || {})
        .filter(([id, t]) => t.until > now && !sameId(id, this.chatUser && this.chatUser.id))
        .map(([, t]) => t.name);
      if (names.length === 0) return '';
      if (names.length === 1) return this.t('typing.single', { a: names[0] });
      if (names.length === 2) return this.t('typing.pair', { a: names[0], b: names[1] });
      return this.t('typing.several', { a: names[0], b: names[1], n: names.length - 2 });
    },

    sendChatMessage() {
      const text = this.messageInput.trim();
      if (!text || this.currentRoomId == null || !this.chatClient) return;
      if ([...text].length > MAX_CHARS) {
        this.chatError = this.t('failure.tooLong', { max: MAX_CHARS });
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

    onCompositionStart() {
      this.composing = true;
    },
    onCompositionEnd() {
      // Cleared after this event's turn: where the confirming Enter's keydown comes
      // right after compositionend (Safari), it still counts as part of the composition.
      setTimeout(() => { this.composing = false; }, 0);
    },

    onComposerKeydown(ev) {
      if (ev.key !== 'Enter' || ev.shiftKey || isImeEnter(ev, this.composing)) return;
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
