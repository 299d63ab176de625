-- Row Level Security: rooms, members and messages are visible only to the room's
-- members; members post only as themselves; a member changes only their own row.
-- Non-members get empty results, never an error that reveals another room.

alter table api.chat_rooms    enable row level security;
alter table api.room_members  enable row level security;
alter table api.chat_messages enable row level security;

revoke all on api.chat_rooms, api.room_members, api.chat_messages from anon, authenticated;
revoke all on api.my_chat_rooms from anon, authenticated;

-- Rooms are created through api.create_chat_room (which also joins the creator).
grant select on api.chat_rooms to authenticated;
grant select, insert, delete on api.room_members to authenticated;
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
