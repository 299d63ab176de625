-- The message insert trigger, the membership test and the room list (the tables are
-- migrations 0001–0003).

-- Assigns the next seq and rev from the room row, and keeps the room's counters. The
-- UPDATE takes the row lock and holds it to commit, so a later seq can never commit
-- before an earlier one in the same room.
-- A missing room is not reported here: this trigger runs before the RLS check, and an
-- error of its own would tell a non-member which room ids exist. With seq 0 the row goes
-- on to RLS (which refuses non-members alike) and then to the foreign key.
create or replace function private.assign_message_seq() returns trigger
language plpgsql security definer set search_path = api, public as $$
begin
  update api.chat_rooms
     set last_seq = last_seq + 1, last_rev = last_rev + 1,
         message_count = message_count + 1, last_message_at = new.created_at
   where id = new.room_id
  returning last_seq, last_rev into new.seq, new.rev;
  new.seq := coalesce(new.seq, 0);
  new.rev := coalesce(new.rev, 0);
  -- A message is born whole: these belong to later changes.
  new.edited_at := null;
  new.deleted_at := null;
  new.deleted_by := null;
  return new;
end
$$;

drop trigger if exists chat_messages_assign_seq on api.chat_messages;
create trigger chat_messages_assign_seq
  before insert on api.chat_messages
  for each row execute function private.assign_message_seq();

-- What I sent, and everything before it, is not unread to me. AFTER the insert, so a
-- row refused by RLS or a constraint moves nothing.
create or replace function private.note_sent() returns trigger
language plpgsql security definer set search_path = api, public as $$
begin
  update api.room_members m set last_sent_seq = new.seq
   where m.room_id = new.room_id and m.user_id = new.user_id and m.last_sent_seq < new.seq;
  return null;
end
$$;

drop trigger if exists chat_messages_note_sent on api.chat_messages;
create trigger chat_messages_note_sent
  after insert on api.chat_messages
  for each row execute function private.note_sent();

-- Membership test used by the RLS policies. SECURITY DEFINER so policies on
-- room_members can ask about room_members without recursing into themselves.
-- PL/pgSQL so its plan is kept per connection (see private.display_name): every join,
-- message and history page runs it.
create or replace function private.is_member(room bigint) returns boolean
language plpgsql stable security definer set search_path = api as $$
begin
  return exists (
    select 1 from api.room_members m
     where m.room_id = is_member.room and m.user_id = api.current_user_id());
end
$$;

-- Functions in private are not for clients unless granted by name (040 grants
-- is_member). Per-schema default privileges cannot revoke PUBLIC's execute right, so
-- each file revokes it from the functions it creates.
revoke execute on function
  private.assign_message_seq(), private.note_sent(), private.is_member(bigint)
  from public;

-- One row per room of mine, read from the room and membership rows alone: its cost
-- does not grow with the rooms' history. Unread: messages after both my read marker
-- and my own latest message (never my own).
create or replace view api.my_chat_rooms with (security_invoker = true) as
select r.id,
       r.name,
       r.description,
       r.created_by,
       r.created_at,
       r.last_seq,
       (select count(*) from api.room_members m where m.room_id = r.id) as member_count,
       r.message_count,
       r.last_message_at,
       greatest(r.last_seq - greatest(me.last_read_seq, me.last_sent_seq), 0) as unread_count,
       me.last_read_seq,
       me.joined_at,
       r.last_rev
  from api.chat_rooms r
  join api.room_members me on me.room_id = r.id and me.user_id = api.current_user_id();
