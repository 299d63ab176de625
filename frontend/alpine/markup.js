// The chat's markup: the floating toggle and the full-screen overlay. `mountChat` puts
// it into the host's chat root element before Alpine starts; every directive in it reads
// the state and methods `withChat` added to the host's component. Text goes through `t()`
// and is shown with `x-text` only, so nothing a user typed is ever parsed as HTML.
export const CHAT_MARKUP = `
<div class="pgchat-ui" x-init="chatAttach($el.parentElement)">
  <button type="button" class="chat-toggle-btn" :class="{ 'is-open': showChat }" x-show="chatClient" x-cloak
          @click="toggleChat()" :aria-label="showChat ? t('toggle.closeLabel') : t('toggle.openLabel')" :aria-expanded="showChat ? 'true' : 'false'">
    <span x-text="showChat ? t('toggle.close') : t('toggle.open')"></span>
    <span class="toggle-badge" x-show="!showChat && totalUnread > 0" x-text="totalUnread"></span>
  </button>

  <div class="chat-overlay" x-show="showChat" x-cloak @keydown.escape.window="showChat && toggleChat()">
    <div class="chat-container" :class="{ 'room-open': currentRoomId !== null }">
      <aside class="chat-sidebar" :aria-label="t('sidebar.label')">
        <div class="sidebar-head">
          <h2 class="sidebar-title" x-text="t('sidebar.title')"></h2>
          <div class="conn-state" :class="'conn-' + chatStatus" role="status">
            <span class="conn-dot"></span><span x-text="chatStatusText"></span>
          </div>
        </div>

        <ul class="room-list">
          <template x-for="room in chatRooms" :key="room.id">
            <li>
              <button type="button" class="room-item" :class="{ active: room.id === currentRoomId, unread: room.unread_count > 0 }"
                      :aria-current="room.id === currentRoomId ? 'true' : null"
                      @click="enterRoom(room.id)" :data-room-id="room.id">
                <span class="room-avatar" aria-hidden="true" x-text="room.name.charAt(0).toUpperCase()">
                </span><span class="presence-dot" x-show="onlineCount(room.id) > 0" :title="t('rooms.online', { names: onlineNames(room.id).join(', ') })"></span>
                <span class="room-text">
                  <span class="room-line">
                    <span class="room-name" x-text="room.name"></span>
                    <time class="room-time" :datetime="room.lastActivity" x-text="chatRelative(room.lastActivity)"></time>
                  </span>
                  <span class="room-preview" x-text="roomPreview(room)"></span>
                </span>
                <span class="unread-badge" x-show="room.unread_count > 0" x-text="room.unread_count > 99 ? '99+' : room.unread_count"></span>
              </button>
            </li>
          </template>
          <li class="room-empty" x-show="chatRooms.length === 0" x-text="t('rooms.empty')"></li>
        </ul>

        <div class="sidebar-forms">
          <form class="create-room" @submit.prevent="createRoom(newRoomName, newRoomDescription)">
            <div class="form-label" x-text="t('create.heading')"></div>
            <input type="text" x-model="newRoomName" :placeholder="t('create.name')" maxlength="100" :aria-label="t('create.name')" required>
            <input type="text" x-model="newRoomDescription" :placeholder="t('create.description')" maxlength="1000" :aria-label="t('create.descriptionLabel')">
            <button type="submit" class="btn-primary" :disabled="!chatConnected" x-text="t('create.submit')"></button>
          </form>
          <form class="join-room" @submit.prevent="joinRoomById(joinRoomIdInput)">
            <div class="form-label" x-text="t('join.heading')"></div>
            <div class="inline-field">
              <input type="text" inputmode="numeric" x-model="joinRoomIdInput" :placeholder="t('join.placeholder')" :aria-label="t('join.label')">
              <button type="submit" class="btn-secondary" :disabled="!chatConnected" x-text="t('join.submit')"></button>
            </div>
          </form>
        </div>
      </aside>

      <section class="chat-main" :aria-label="t('pane.label')">
        <template x-if="currentRoom">
          <header class="room-header">
            <button type="button" class="back-btn" @click="closeRoom()" :aria-label="t('room.back')">‹</button>
            <div class="room-title">
              <h2 class="room-title-name"><span x-text="currentRoom.name"></span> <span class="room-id" x-text="'#' + currentRoom.id"></span></h2>
              <div class="room-title-sub">
                <span x-text="t('room.members', { n: currentRoom.member_count || 1 })"></span>
                <span x-show="onlineCount(currentRoom.id) > 0" class="online-names">
                  · <span class="presence-inline"></span><span x-text="t('rooms.online', { names: onlineNames(currentRoom.id).join(', ') })"></span>
                </span>
              </div>
            </div>
            <button type="button" class="link-btn leave-btn" @click="leaveCurrentRoom()" x-text="t('room.leave')"></button>
          </header>
        </template>

        <div class="chat-banner" x-show="chatStatus !== 'connected' && chatStatus !== 'offline'" x-text="t('conn.queued', { status: chatStatusText })"></div>
        <div class="chat-error" x-show="chatError" role="alert">
          <span x-text="chatError"></span>
          <button type="button" class="link-btn" @click="chatError = ''" :aria-label="t('failure.dismiss')">✕</button>
        </div>

        <div class="chat-empty" x-show="currentRoomId === null">
          <div class="chat-empty-icon" aria-hidden="true">💬</div>
          <div x-text="t('room.pick')"></div>
        </div>

        <div class="chat-messages" x-ref="chatMessages" x-show="currentRoomId !== null" role="log" tabindex="0"
             :aria-label="t('room.logLabel', { name: currentRoom ? currentRoom.name : '' })">
          <button type="button" class="load-earlier" x-show="canLoadEarlier" @click="loadEarlier()" x-text="t('messages.loadEarlier')"></button>
          <div class="messages-start" x-show="currentRoomMessages.length === 0" x-text="t('messages.none')"></div>
          <template x-for="msg in currentRoomMessages" :key="msg.key">
            <div class="chat-row">
              <div class="day-separator" x-show="msg.dayLabel"><span x-text="msg.dayLabel"></span></div>
              <template x-if="msg.system">
                <div class="chat-system" x-text="t(msg.textKey)"></div>
              </template>
              <template x-if="!msg.system">
                <div class="chat-message" :class="{ mine: msg.mine, pending: msg.pending, failed: msg.failed, deleted: !!msg.deleted_at, grouped: !msg.showHeader }" :data-seq="msg.seq">
                  <div class="msg-meta" x-show="msg.showHeader">
                    <span class="msg-sender" x-text="msg.mine ? t('message.you') : msg.user_name"></span>
                    <time class="msg-time" :datetime="msg.created_at" x-text="msg.time"></time>
                  </div>
                  <div class="msg-bubble" x-text="msg.deleted_at ? t('message.deleted') : msg.message"></div>
                  <div class="msg-edited" x-show="msg.edited_at && !msg.deleted_at" x-text="t('message.edited')"></div>
                  <div class="msg-status" x-show="msg.pending || msg.failed" x-text="msg.failed ? t('message.notSent') : t('message.sending')"></div>
                </div>
              </template>
            </div>
          </template>
        </div>

        <div class="typing-line" x-show="currentRoomId !== null" aria-live="polite"><span x-text="typingLine"></span></div>

        <form class="composer" x-show="currentRoomId !== null" @submit.prevent="sendChatMessage()">
          <textarea x-ref="chatInput" rows="1" x-model="messageInput" @input="handleTyping()" @keydown="onComposerKeydown($event)"
                    @compositionstart="onCompositionStart()" @compositionend="onCompositionEnd()"
                    :placeholder="t('composer.placeholder')" :aria-label="t('composer.label')" maxlength="5000"></textarea>
          <button type="submit" class="send-btn" :disabled="!messageInput.trim()" :aria-label="t('composer.send')" x-text="t('composer.send')"></button>
        </form>
      </section>
    </div>
  </div>
</div>
`;

/** Fills the host's chat root element (inside the host's `x-data` component) with the
 *  chat's markup. Call it before `Alpine.start()`. */
export function mountChat(root) {
  if (!root) throw new Error('pgchat: no chat root element to mount into');
  root.classList.add('pgchat');
  root.innerHTML = CHAT_MARKUP;
  return root;
}
