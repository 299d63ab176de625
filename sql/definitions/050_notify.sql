-- NOTIFY is only a doorbell (SPEC §6.1). Any role that can log in may NOTIFY or LISTEN
-- on any channel, so a payload carries ids and a kind, never text and no user ids, and
-- the daemon reads what changed from the tables through the narrow functions at the end
-- of this file. A forged doorbell can cause a read, never a frame. Payloads:
--   c:<room>:<rev>  the room's change stream reached <rev> (new, edited and deleted
--                   messages, read markers)
--   m:<room>:<rev>  the same, for a membership change (read even where nobody is subscribed,
--                   so a new member's sockets learn of the room)
--   p:<room>        presence in the room changed (sql/060)
--   t:<room>        typing in the room changed (sql/060)

-- Read from a table no session can write (sql/005), never from a setting: a writer
-- could `set_config('pgchat.channel', …)` and ring a channel no daemon listens on.
-- PL/pgSQL keeps its plan for the connection's life (it runs on every notification).
create or replace function pgchat.channel() returns text
language plpgsql stable security definer set search_path = pg_catalog as $$
begin
  return coalesce((select s.notify_channel from private.settings s), 'pgchat');
end
$$;

-- Changes without a row of their own to carry a rev (memberships, read markers; hard
-- deletions from before migration 0003) are rows of `private.room_changes`.

-- The room's next rev, under the room row lock. NULL when the room is gone (a cascade
-- from deleting the room itself: nothing is left to tell).
create or replace function private.next_rev(room bigint) returns bigint
language plpgsql security definer set search_path = api as $$
declare
  r bigint;
begin
  update api.chat_rooms set last_rev = last_rev + 1 where id = room returning last_rev into r;
  return r;
end
$$;

create or replace function private.record_change(
  room bigint, change_kind text, change_key bigint, change_seq bigint, is_present boolean)
returns void
language plpgsql security definer set search_path = private, public as $$
declare
  r bigint := private.next_rev(room);
begin
  if r is null then
    return;
  end if;
  insert into private.room_changes as c (room_id, kind, key, rev, seq, present)
  values (room, change_kind, change_key, r, change_seq, is_present)
  on conflict (room_id, kind, key) do update
    set rev = excluded.rev, seq = excluded.seq, present = excluded.present, changed_at = now();
  perform pg_notify(pgchat.channel(),
    case change_kind when 'member' then 'm:' else 'c:' end || room || ':' || r);
end
$$;

create or replace function private.notify_message() returns trigger
language plpgsql security definer set search_path = api, public as $$
begin
  if tg_op = 'INSERT' or new.rev <> old.rev then
    perform pg_notify(pgchat.channel(), 'c:' || new.room_id || ':' || new.rev);
  end if;
  return null;
end
$$;

-- Every change of a message is an INSERT or an UPDATE: a DELETE becomes a soft delete
-- (sql/definitions/045_message_changes.sql), and the only rows really deleted are those
-- of a room being deleted, whose stream ends with it.
drop trigger if exists chat_messages_notify on api.chat_messages;
create trigger chat_messages_notify
  after insert or update on api.chat_messages
  for each row execute function private.notify_message();

create or replace function private.notify_membership() returns trigger
language plpgsql security definer set search_path = api, public as $$
begin
  if tg_op = 'INSERT' then
    perform private.record_change(new.room_id, 'member', new.user_id, null, true);
  elsif tg_op = 'DELETE' then
    perform private.record_change(old.room_id, 'member', old.user_id, null, false);
  elsif new.last_read_seq is distinct from old.last_read_seq then
    perform private.record_change(new.room_id, 'read', new.user_id, new.last_read_seq, null);
  end if;
  return null;
end
$$;

drop trigger if exists room_members_notify on api.room_members;
create trigger room_members_notify
  after insert or update or delete on api.room_members
  for each row execute function private.notify_membership();

-- The daemon's own privileged reads, kept narrow (SPEC §2.1). Only `authenticator` may
-- call them.

-- A room's changes after `after_rev`, in rev order: messages (new or changed, as their
-- current state) and the changes recorded above. `body` is what the event carries: the
-- message, the deleted message's ids, the reader's display name, or the room (joined).
-- PL/pgSQL, not SQL: a SQL function with SET is never inlined and is planned again on
-- every call; PL/pgSQL keeps its plans for the connection's life. The relay reads once
-- per burst, so this is on the path of every message.
create or replace function pgchat.changes_after(room bigint, after_rev bigint, max_rows integer)
returns table (rev bigint, kind text, seq bigint, user_id bigint, body text)
language plpgsql stable security definer set search_path = api, public as $$
#variable_conflict use_column
begin
  return query
  select r.rev, r.kind, r.seq, r.user_id, r.body
    from pgchat.changes_after_rooms(array[changes_after.room], array[changes_after.after_rev],
                                    changes_after.max_rows) r;
end
$$;

-- The changes of several rooms after a rev each, at most max_rows per room, in rev
-- order within each room: one statement per burst of doorbells, whatever rang.
create or replace function pgchat.changes_after_rooms(rooms bigint[], after_revs bigint[], max_rows integer)
returns table (room_id bigint, rev bigint, kind text, seq bigint, user_id bigint, body text)
language plpgsql stable security definer set search_path = api, public as $$
#variable_conflict use_column
begin
  return query
  select p.room_id, x.rev, x.kind, x.seq, x.user_id, x.body
    from unnest(rooms, after_revs) with ordinality as p(room_id, after_rev, ord)
    cross join lateral (
      select * from (
        (select m.rev, 'message'::text as kind, m.seq, m.user_id, private.message_json(m)::text as body
           from api.chat_messages m
          where m.room_id = p.room_id and m.rev > p.after_rev
          order by m.rev
          limit max_rows)
        union all
        (select c.rev,
                case when c.kind <> 'member' then c.kind when c.present then 'joined' else 'left' end,
                c.seq, c.key,
                case c.kind
                  when 'deleted' then json_build_object('id', c.key, 'room_id', c.room_id, 'seq', c.seq)::text
                  when 'read' then private.display_name(c.key)
                  else (select private.room_json(r) from api.chat_rooms r where r.id = c.room_id)::text
                end
           from private.room_changes c
          where c.room_id = p.room_id and c.rev > p.after_rev
          order by c.rev
          limit max_rows)
      ) u
      order by 1
      limit max_rows
    ) x
   order by p.ord, x.rev;
end
$$;

-- Which of these (room, user) pairs are memberships now: checked for every subscribed
-- socket after the LISTEN connection was lost, before anything is relayed again.
create or replace function pgchat.memberships(rooms bigint[], users bigint[])
returns table (room_id bigint, user_id bigint)
language sql stable security definer set search_path = api, public as $$
  select m.room_id, m.user_id
    from unnest(rooms, users) as p(room_id, user_id)
    join api.room_members m on m.room_id = p.room_id and m.user_id = p.user_id;
$$;

-- The room's last seq and rev, for a room the daemon starts following.
create or replace function pgchat.room_position(room bigint)
returns table (last_seq bigint, last_rev bigint)
language sql stable security definer set search_path = api, public as $$
  select r.last_seq, r.last_rev from api.chat_rooms r where r.id = room;
$$;

revoke execute on function
  private.next_rev(bigint), private.record_change(bigint, text, bigint, bigint, boolean),
  private.notify_message(), private.notify_membership(),
  pgchat.changes_after(bigint, bigint, integer), pgchat.memberships(bigint[], bigint[]),
  pgchat.changes_after_rooms(bigint[], bigint[], integer), pgchat.room_position(bigint)
  from public;
grant execute on function pgchat.channel() to public;
grant execute on function
  pgchat.changes_after(bigint, bigint, integer), pgchat.memberships(bigint[], bigint[]),
  pgchat.changes_after_rooms(bigint[], bigint[], integer), pgchat.room_position(bigint)
  to authenticator;

-- A deleted room takes its recorded changes with it.
create or replace function private.forget_room_changes() returns trigger
language plpgsql security definer set search_path = private, public as $$
begin
  delete from private.room_changes c where c.room_id = old.id;
  return null;
end
$$;
revoke execute on function private.forget_room_changes() from public;

drop trigger if exists chat_rooms_forget_changes on api.chat_rooms;
create trigger chat_rooms_forget_changes
  after delete on api.chat_rooms
  for each row execute function private.forget_room_changes();

-- One membership change by its rev, with its age: read for a room nobody here is
-- subscribed to, to tell a new member's sockets about the room. The age lets the daemon
-- ignore a doorbell that rings an old change again.
create or replace function pgchat.member_change_at(room bigint, at_rev bigint)
returns table (user_id bigint, present boolean, body text, age_ms bigint)
language sql stable security definer set search_path = api, public as $$
  select c.key, c.present,
         (select private.room_json(r) from api.chat_rooms r where r.id = c.room_id)::text,
         (extract(epoch from (now() - c.changed_at)) * 1000)::bigint
    from private.room_changes c
   where c.room_id = room and c.kind = 'member' and c.rev = at_rev;
$$;
revoke execute on function pgchat.member_change_at(bigint, bigint) from public;
grant execute on function pgchat.member_change_at(bigint, bigint) to authenticator;

-- The membership changes rung at these (room, rev) pairs that concern these users: what
-- a burst of membership doorbells for rooms nobody on the daemon follows makes it read,
-- in one statement (a join storm rings thousands). Only the daemon's own users are
-- returned; the others' sockets are elsewhere.
create or replace function pgchat.member_changes_at(rooms bigint[], at_revs bigint[], users bigint[])
returns table (room_id bigint, rev bigint, user_id bigint, present boolean, body text, age_ms bigint)
language sql stable security definer set search_path = api, public as $$
  select c.room_id, c.rev, c.key, c.present,
         (select private.room_json(r) from api.chat_rooms r where r.id = c.room_id)::text,
         (extract(epoch from (now() - c.changed_at)) * 1000)::bigint
    from unnest(rooms, at_revs) as a(room_id, rev)
    join private.room_changes c on c.room_id = a.room_id and c.rev = a.rev
   where c.kind = 'member' and c.key = any (users);
$$;
revoke execute on function pgchat.member_changes_at(bigint[], bigint[], bigint[]) from public;
grant execute on function pgchat.member_changes_at(bigint[], bigint[], bigint[]) to authenticator;

-- Memberships these users began since `since`: after its LISTEN connection was lost, a
-- daemon tells its sockets about rooms their users joined meanwhile, as the doorbell
-- would have (it reads only the rooms it follows otherwise).
create or replace function pgchat.memberships_begun_since(users bigint[], since timestamptz)
returns table (room_id bigint, rev bigint, user_id bigint, body text)
language sql stable security definer set search_path = api, public as $$
  select c.room_id, c.rev, c.key,
         (select private.room_json(r) from api.chat_rooms r where r.id = c.room_id)::text
    from private.room_changes c
   where c.kind = 'member' and c.present and c.key = any (users) and c.changed_at >= since;
$$;
revoke execute on function pgchat.memberships_begun_since(bigint[], timestamptz) from public;
grant execute on function pgchat.memberships_begun_since(bigint[], timestamptz) to authenticator;
