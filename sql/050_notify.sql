-- Change notifications for pgchat. Every event goes to one channel (default `pgchat`,
-- overridable with the database setting `pgchat.channel`; never PostgREST's `pgrst`).
-- pg_notify payloads must stay under 8000 bytes: a message row that does not fit is
-- sent as a reference (room_id, seq) and the daemon fetches it.

-- Read from a table no session can write (sql/005), never from a setting: a writer
-- could `set_config('pgchat.channel', …)` and ring a channel no daemon listens on.
-- PL/pgSQL keeps its plan for the connection's life (it runs on every notification).
create or replace function pgchat.channel() returns text
language plpgsql stable security definer set search_path = pg_catalog as $$
begin
  return coalesce((select s.notify_channel from private.settings s), 'pgchat');
end
$$;

create or replace function private.notify_message() returns trigger
language plpgsql security definer set search_path = api, public as $$
declare
  row_json json;
  payload text;
  op text := case tg_op when 'INSERT' then 'message'
                        when 'UPDATE' then 'message_updated'
                        else 'message_deleted' end;
  r api.chat_messages := case tg_op when 'DELETE' then old else new end;
begin
  if tg_op = 'DELETE' then
    row_json := json_build_object('id', r.id, 'room_id', r.room_id, 'seq', r.seq);
  else
    row_json := private.message_json(r);
  end if;
  payload := json_build_object('t', op, 'room_id', r.room_id, 'seq', r.seq, 'row', row_json)::text;
  if octet_length(payload) > 7900 then
    payload := json_build_object('t', op, 'room_id', r.room_id, 'seq', r.seq, 'ref', true)::text;
  end if;
  perform pg_notify(pgchat.channel(), payload);
  return null;
end
$$;

drop trigger if exists chat_messages_notify on api.chat_messages;
create trigger chat_messages_notify
  after insert or update or delete on api.chat_messages
  for each row execute function private.notify_message();

create or replace function private.notify_membership() returns trigger
language plpgsql security definer set search_path = api, public as $$
declare
  r api.room_members := case tg_op when 'DELETE' then old else new end;
  op text;
begin
  if tg_op = 'INSERT' then
    op := 'member_joined';
  elsif tg_op = 'DELETE' then
    op := 'member_left';
  elsif new.last_read_seq is distinct from old.last_read_seq then
    op := 'read';
  else
    return null;
  end if;
  -- A join carries the room, shaped like the create/join replies, so the new member's
  -- open sockets can list it at once.
  perform pg_notify(pgchat.channel(), json_build_object(
    't', op, 'room_id', r.room_id, 'user_id', r.user_id,
    'user_name', private.display_name(r.user_id), 'seq', r.last_read_seq,
    'room', case when op = 'member_joined' then
      (select private.room_json(c) from api.chat_rooms c where c.id = r.room_id) end)::text);
  return null;
end
$$;

drop trigger if exists room_members_notify on api.room_members;
create trigger room_members_notify
  after insert or update or delete on api.room_members
  for each row execute function private.notify_membership();

-- The daemon's own privileged reads, kept narrow (SPEC §2.1): fetching a notified
-- row too large for its payload, and catching up rooms that already have checked
-- subscribers after the LISTEN connection was lost. Only `authenticator` may call them.
create or replace function pgchat.messages_after(room bigint, after_seq bigint, max_rows integer)
returns setof json
language sql stable security definer set search_path = api, public as $$
  select private.message_json(m)
    from api.chat_messages m
   where m.room_id = room and m.seq > after_seq
   order by m.seq
   limit max_rows;
$$;

revoke execute on function
  private.notify_message(), private.notify_membership(),
  pgchat.messages_after(bigint, bigint, integer)
  from public;
grant execute on function pgchat.channel() to public;
grant execute on function pgchat.messages_after(bigint, bigint, integer) to authenticator;
