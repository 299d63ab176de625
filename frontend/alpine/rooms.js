// The room list (plan 000 §3): loading, merging, creating, joining and leaving rooms.
// Methods and the refresh timer; the rest of the state they use is in feature.js.
import { sameId } from './feature.js';

export function chatRooms() {
  return {
    roomsRefreshTimer: null,

    async loadChatRooms() {
      try {
        const reply = await this.chatClient.request({ type: 'rooms' });
        this.mergeRooms(reply.rooms || []);
      } catch (e) {
        if (e.code !== 'disconnected') this.chatError = this.t('failure.loadRooms', { reason: this.chatErrorText(e) });
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
          countedSeq: r.last_seq || 0, readSent: r.last_read_seq || 0, last: null,
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
        this.addSystemNote(reply.room.id, 'system.created');
        await this.enterRoom(reply.room.id);
      } catch (e) {
        this.chatError = this.t('failure.create', { reason: this.chatErrorText(e) });
      }
    },

    async joinRoomById(id) {
      const roomId = Number(String(id).trim().replace(/^#/, ''));
      if (!Number.isInteger(roomId) || roomId <= 0) {
        this.chatError = this.t('failure.badRoomId');
        return;
      }
      try {
        const reply = await this.chatClient.request({ type: 'join_room', roomId });
        this.joinRoomIdInput = '';
        this.addRoom(reply.room);
        this.addSystemNote(reply.room.id, 'system.joined');
        await this.enterRoom(reply.room.id);
      } catch (e) {
        this.chatError = e.code === 'not_found'
          ? this.t('failure.noSuchRoom', { id: roomId })
          : this.t('failure.join', { reason: this.chatErrorText(e) });
      }
    },

    async leaveCurrentRoom() {
      const roomId = this.currentRoomId;
      if (roomId == null) return;
      try {
        await this.chatClient.request({ type: 'leave_room', roomId });
        this.removeRoom(roomId);
      } catch (e) {
        this.chatError = this.t('failure.leave', { reason: this.chatErrorText(e) });
      }
    },
  };
}
