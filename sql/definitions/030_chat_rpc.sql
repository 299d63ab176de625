-- RPCs. PostgREST serves each as POST /rpc/<name> with JSON named arguments, and pgchat
-- calls the same functions inside the same transaction context. Rooms and memberships
-- change through SECURITY DEFINER functions that act only for api.current_user_id();
-- messages, history and read markers run as the caller, so RLS decides.

create or replace function private.require_user() returns bigint
language plpgsql stable as $$
declare
  uid bigint := api.current_user_id();
begin
  if uid is null then
    raise exception 'not authenticated' using errcode = '42501';
  end if;
  return uid;
end
$$;

create or replace function private.room_json(r api.chat_rooms) returns json
language sql stable as $$
  select json_build_object(
    'id', r.id, 'name', r.name, 'description', r.description,
    'created_by', r.created_by, 'created_at', r.created_at, 'last_seq', r.last_seq,
    'last_rev', r.last_rev,
    'member_count', (select count(*) from api.room_members m where m.room_id = r.id));
$$;

create or replace function api.create_chat_room(name text, description text default '')
returns json
language plpgsql security definer set search_path = api, public as $$
declare
  uid bigint := private.require_user();
  r api.chat_rooms;
begin
  insert into api.chat_rooms (name, description, created_by)
  values (create_chat_room.name, coalesce(create_chat_room.description, ''), uid)
  returning * into r;
  insert into api.room_members (room_id, user_id) values (r.id, uid);
  return private.room_json(r);
end
$$;

-- Rooms are open: anyone signed in who knows a room's id may join it.
create or replace function api.join_chat_room(room_id bigint) returns json
language plpgsql security definer set search_path = api, public as $$
declare
  uid bigint := private.require_user();
  r api.chat_rooms;
begin
  select * into r from api.chat_rooms where id = join_chat_room.room_id;
  if not found then
    raise exception 'room not found' using errcode = 'P0002';
  end if;
  insert into api.room_members (room_id, user_id) values (r.id, uid)
  on conflict on constraint room_members_room_id_user_id_key do nothing;
  return private.room_json(r);
end
$$;

create or replace function api.leave_chat_room(room_id bigint) returns json
language plpgsql security definer set search_path = api, public as $$
declare
  uid bigint := private.require_user();
begin
  delete from api.room_members m
   where m.room_id = leave_chat_room.room_id and m.user_id = uid;
  return json_build_object('room_id', leave_chat_room.room_id, 'left', found);
end
$$;

create or replace function private.message_json(m api.chat_messages) returns json
language sql stable as $$
  select json_build_object(
    'id', m.id, 'room_id', m.room_id, 'seq', m.seq, 'rev', m.rev, 'kind', m.kind,
    'user_id', m.user_id, 'user_name', private.display_name(m.user_id),
    'message', m.message, 'created_at', m.created_at, 'client_id', m.client_id,
    'edited_at', m.edited_at, 'deleted_at', m.deleted_at, 'deleted_by', m.deleted_by);
$$;

-- Inserts a message as the caller. Re-sending the same client_id returns the stored
-- row instead of a duplicate; the seq it would have used is rolled back with the
-- subtransaction, so seqs stay gap-free.
create or replace function api.send_message(room_id bigint, message text, client_id text default null)
returns json
language plpgsql set search_path = api, public as $$
declare
  m api.chat_messages;
begin
  if client_id is not null then
    select * into m from api.chat_messages c
     where c.room_id = send_message.room_id and c.user_id = api.current_user_id()
       and c.client_id = send_message.client_id;
    if found then
      return private.message_json(m);
    end if;
  end if;
  begin
    insert into api.chat_messages (room_id, message, client_id)
    values (send_message.room_id, send_message.message, send_message.client_id)
    returning * into m;
  exception when unique_violation then
    select * into m from api.chat_messages c
     where c.room_id = send_message.room_id and c.user_id = api.current_user_id()
       and c.client_id = send_message.client_id;
    if not found then
      raise;
    end if;
  end;
  return private.message_json(m);
end
$$;

-- One page of history, newest first. RLS limits it to rooms the caller belongs to.
-- The reads below have a constant inner LIMIT and one range condition: a SQL function
-- is planned with its arguments as parameters, and with a parameter LIMIT the planner
-- may choose to sort the whole room. The bound is a sub-select: under RLS only a
-- leakproof condition (a plain parameter is; COALESCE is not, nor `is null or`) can
-- start the index scan; any other is a filter on rows walked from the newest message,
-- whose cost grows with history (tests/sql_history_cost.rs counts the buffers).
create or replace function api.chat_history(room_id bigint, before_seq bigint default null, max_rows integer default 50)
returns json
language sql stable set search_path = api, public as $$
  select coalesce(json_agg(private.message_json(m) order by m.seq desc), '[]'::json)
    from (select * from (select * from api.chat_messages c
                          where c.room_id = chat_history.room_id
                            and c.seq < (select coalesce(chat_history.before_seq, 9223372036854775807))
                          order by c.seq desc
                          limit 100) page
           order by page.seq desc
           limit least(greatest(coalesce(max_rows, 50), 1), 100)) m;
$$;

-- Messages after a seq, oldest first: the replay a client asks for with `since`.
create or replace function api.messages_since(room_id bigint, after_seq bigint, max_rows integer default 1000)
returns json
language sql stable set search_path = api, public as $$
  select coalesce(json_agg(private.message_json(m) order by m.seq), '[]'::json)
    from (select * from (select * from api.chat_messages c
                          where c.room_id = messages_since.room_id and c.seq > messages_since.after_seq
                          order by c.seq
                          limit 1000) page
           order by page.seq
           limit least(greatest(coalesce(max_rows, 1000), 1), 1000)) m;
$$;

-- The room's change stream as the caller sees it (RLS): every message whose rev is after
-- `after_rev`, in rev order, as its current state, so a message edited three times
-- since arrives once. What `join {sinceRev}` replays, one page at a time: the next page
-- starts after the last rev of this one.
create or replace function api.messages_since_rev(room_id bigint, after_rev bigint, max_rows integer default 500)
returns json
language sql stable set search_path = api, public as $$
  select coalesce(json_agg(private.message_json(m) order by m.rev), '[]'::json)
    from (select * from (select * from api.chat_messages c
                          where c.room_id = messages_since_rev.room_id
                            and c.rev > messages_since_rev.after_rev
                          order by c.rev
                          limit 1000) page
           order by page.rev
           limit least(greatest(coalesce(max_rows, 500), 1), 1000)) m;
$$;

-- Moves my read marker forward (never back). Returns the stored marker.
create or replace function api.mark_read(room_id bigint, seq bigint) returns json
language plpgsql set search_path = api, public as $$
declare
  stored bigint;
begin
  update api.room_members m
     set last_read_seq = mark_read.seq  -- clamped by the room_members_clamp_read trigger
   where m.room_id = mark_read.room_id and m.user_id = api.current_user_id()
  returning m.last_read_seq into stored;
  if not found then
    raise exception 'not a member of this room' using errcode = '42501';
  end if;
  return json_build_object('room_id', room_id, 'last_read_seq', stored);
end
$$;

-- What a socket needs when it subscribes: proof of membership (RLS hides the room
-- otherwise) and the room's current last seq.
create or replace function api.room_state(room_id bigint) returns json
language sql stable set search_path = api, public as $$
  select json_build_object('room', private.room_json(r), 'last_read_seq', me.last_read_seq)
    from api.chat_rooms r
    join api.room_members me on me.room_id = r.id and me.user_id = api.current_user_id()
   where r.id = room_state.room_id;
$$;

revoke execute on function
  private.require_user(), private.room_json(api.chat_rooms), private.message_json(api.chat_messages)
  from public;
grant execute on function
  private.require_user(), private.room_json(api.chat_rooms), private.message_json(api.chat_messages)
  to authenticated;
-- Chat RPCs are for signed-in users only: not PUBLIC (the default), so not `anon`.
revoke execute on function
  api.create_chat_room(text, text), api.join_chat_room(bigint), api.leave_chat_room(bigint),
  api.send_message(bigint, text, text), api.chat_history(bigint, bigint, integer),
  api.messages_since(bigint, bigint, integer), api.messages_since_rev(bigint, bigint, integer),
  api.mark_read(bigint, bigint), api.room_state(bigint)
  from public;
grant execute on function
  api.create_chat_room(text, text), api.join_chat_room(bigint), api.leave_chat_room(bigint),
  api.send_message(bigint, text, text), api.chat_history(bigint, bigint, integer),
  api.messages_since(bigint, bigint, integer), api.messages_since_rev(bigint, bigint, integer),
  api.mark_read(bigint, bigint), api.room_state(bigint)
  to authenticated;
