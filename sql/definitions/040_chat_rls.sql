-- Row Level Security: rooms, members and messages are visible only to the room's
-- members; members post only as themselves; a member changes only their own row.
-- Non-members get empty results, never an error that reveals another room.

-- Row level security is enabled on the tables by migration 0001.

revoke all on api.chat_rooms, api.room_members, api.chat_messages from anon, authenticated;
revoke all on api.my_chat_rooms from anon, authenticated;

-- Rooms are created through api.create_chat_room (which also joins the creator).
grant select on api.chat_rooms to authenticated;
grant select, delete on api.room_members to authenticated;
-- Joining sets only which room (and who: checked to be me); the rest are defaults.
grant insert (room_id, user_id) on api.room_members to authenticated;
grant update (last_read_seq) on api.room_members to authenticated;
grant select on api.chat_messages to authenticated;
grant insert (room_id, message, client_id, user_id) on api.chat_messages to authenticated;
grant select on api.my_chat_rooms to authenticated;

drop policy if exists chat_rooms_select on api.chat_rooms;
create policy chat_rooms_select on api.chat_rooms for select to authenticated
  using (private.is_member(id));

-- One's own rows are visible outright: is_member() does not see a row inserted by the
-- same statement, so without it `insert … returning` (PostgREST's return=representation)
-- of one's own membership would fail the SELECT policy.
drop policy if exists room_members_select on api.room_members;
create policy room_members_select on api.room_members for select to authenticated
  using (user_id = api.current_user_id() or private.is_member(room_id));

-- Joining by inserting one's own row is the same as api.join_chat_room.
drop policy if exists room_members_insert on api.room_members;
create policy room_members_insert on api.room_members for insert to authenticated
  with check (user_id = api.current_user_id());

drop policy if exists room_members_update on api.room_members;
create policy room_members_update on api.room_members for update to authenticated
  using (user_id = api.current_user_id())
  with check (user_id = api.current_user_id());

drop policy if exists room_members_delete on api.room_members;
create policy room_members_delete on api.room_members for delete to authenticated
  using (user_id = api.current_user_id());

drop policy if exists chat_messages_select on api.chat_messages;
create policy chat_messages_select on api.chat_messages for select to authenticated
  using (private.is_member(room_id));

drop policy if exists chat_messages_insert on api.chat_messages;
create policy chat_messages_insert on api.chat_messages for insert to authenticated
  with check (user_id = api.current_user_id() and private.is_member(room_id));

grant execute on function private.is_member(bigint) to authenticated;

-- A read marker only moves forward and never past the room's last message, however it
-- is written (mark_read, PATCH /room_members, or plain SQL).
create or replace function private.clamp_read_marker() returns trigger
language plpgsql security definer set search_path = api, public as $$
begin
  new.last_read_seq := greatest(old.last_read_seq,
    least(new.last_read_seq, (select r.last_seq from api.chat_rooms r where r.id = new.room_id)));
  return new;
end
$$;
revoke execute on function private.clamp_read_marker() from public;

drop trigger if exists room_members_clamp_read on api.room_members;
create trigger room_members_clamp_read
  before update of last_read_seq on api.room_members
  for each row execute function private.clamp_read_marker();
