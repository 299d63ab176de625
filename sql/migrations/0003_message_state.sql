-- Message state for edits and soft deletions (SPEC §6.2: kind, edited_at, deleted_at,
-- deleted_by), and the counters that keep the room list's cost independent of history.

-- Today's notify trigger (definitions) rings the doorbell for every changed row; none
-- of the updates below is a change anyone must hear of. The definitions re-create it.
drop trigger if exists chat_messages_notify on api.chat_messages;
drop trigger if exists chat_messages_changing on api.chat_messages;

alter table api.chat_messages add column if not exists kind text not null default 'text';
alter table api.chat_messages add column if not exists edited_at timestamptz;
alter table api.chat_messages add column if not exists deleted_at timestamptz;
-- NULL for a deletion made outside any user's request (e.g. in psql).
alter table api.chat_messages add column if not exists deleted_by bigint references private.users(id);

alter table api.chat_messages drop constraint if exists chat_messages_kind;
alter table api.chat_messages add constraint chat_messages_kind check (kind in ('text', 'system'));
-- A deleted message keeps its row and seq, with its text cleared: the only empty text.
alter table api.chat_messages drop constraint if exists chat_messages_message_not_empty;
alter table api.chat_messages add constraint chat_messages_message_not_empty
  check (char_length(message) >= 1 or deleted_at is not null);
alter table api.chat_messages drop constraint if exists chat_messages_deleted_is_empty;
alter table api.chat_messages add constraint chat_messages_deleted_is_empty
  check (deleted_at is null or message = '');

-- Counters kept by the message triggers, so `my_chat_rooms` reads one row per room:
-- messages not deleted, and when the last one was sent.
alter table api.chat_rooms add column if not exists message_count bigint not null default 0;
alter table api.chat_rooms add column if not exists last_message_at timestamptz;
update api.chat_rooms r
   set message_count = s.n, last_message_at = s.last_at
  from (select c.room_id, count(*) filter (where c.deleted_at is null) as n,
               max(c.created_at) as last_at
          from api.chat_messages c group by c.room_id) s
 where s.room_id = r.id;

-- The seq of my latest message in the room, kept by the insert trigger: what I sent
-- and what came before it is not unread to me (`unread_count = last_seq - greatest(
-- last_read_seq, last_sent_seq)`). A column of its own, not the read marker: sending
-- is not a read receipt.
alter table api.room_members add column if not exists last_sent_seq bigint not null default 0;
update api.room_members m
   set last_sent_seq = s.last_sent
  from (select c.room_id, c.user_id, max(c.seq) as last_sent
          from api.chat_messages c group by c.room_id, c.user_id) s
 where s.room_id = m.room_id and s.user_id = m.user_id and m.last_sent_seq <> s.last_sent;

-- Hard deletions no longer happen (a DELETE becomes a soft delete), so recorded
-- deletions from before are all that `room_changes` will hold of that kind.
