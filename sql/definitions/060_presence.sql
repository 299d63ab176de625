-- Presence shared by every pgchat daemon on this database. A user is online in a room
-- while any daemon holds a socket of theirs joined to it; `user_joined`/`user_left` are
-- announced once per user, not per socket or per daemon. Daemons heartbeat; a daemon
-- that stops heartbeating is swept and its users announced gone.
-- The tables (UNLOGGED: soft state) are migrations 0001 and 0002.

-- The doorbell for a room's presence: no user id (a stranger's LISTEN must not learn who
-- is in which room); the daemons read the room's presence from the table (presence_in).
create or replace function pgchat.ring_presence(room bigint) returns void
language sql security definer set search_path = pgchat, public as $$
  select pg_notify(pgchat.channel(), 'p:' || room);
$$;

-- Logs a room-wide presence change under the room's next presence rev. The rev is taken
-- with the room's row locked until commit, so revs are gap-free and in commit order per
-- room (the reader relies on both), and the caller rings the doorbell.
create or replace function pgchat.presence_logged(room bigint, uid bigint, is_online boolean)
returns void
language plpgsql security definer set search_path = pgchat, public as $$
declare
  r bigint;
begin
  insert into pgchat.presence_rooms as p (room_id, rev) values (room, 1)
  on conflict (room_id) do update set rev = p.rev + 1
  returning p.rev into r;
  insert into pgchat.presence_log (room_id, rev, user_id, online) values (room, r, uid, is_online);
end
$$;

-- Logs a batch of room-wide presence changes (parallel arrays, at most one per room and
-- user) at each room's next presence revs, and rings one doorbell per room; returns how
-- many were logged. Each room's revs are taken with one update of its row, locked until
-- commit and taken in room order (so two batches cannot deadlock), so revs stay gap-free
-- and in commit order per room.
create or replace function pgchat.presence_log_batch(rooms bigint[], users bigint[], onlines boolean[])
returns integer
language plpgsql security definer set search_path = pgchat, public as $$
declare
  ch text := pgchat.channel();
  logged_count integer;
  rung integer;
begin
  with changed as (
    select c.room_id, c.user_id, c.online
      from unnest(rooms, users, onlines) as c(room_id, user_id, online)
  ), counted as (
    select room_id, count(*) as n from changed group by room_id
  ), bumped as (
    insert into pgchat.presence_rooms as p (room_id, rev)
    select room_id, n from counted order by room_id
    on conflict (room_id) do update set rev = p.rev + excluded.rev
    returning p.room_id, p.rev
  ), logged as (
    insert into pgchat.presence_log (room_id, rev, user_id, online)
    select c.room_id, b.rev - k.n + row_number() over (partition by c.room_id order by c.user_id),
           c.user_id, c.online
      from changed c join counted k using (room_id) join bumped b using (room_id)
    returning room_id
  )
  select (select count(*) from logged),
         (select count(*) from (select pg_notify(ch, 'p:' || b.room_id) from bumped b) as r)
    into logged_count, rung;
  return logged_count;
end
$$;

-- Marks one user online/offline in a room for one daemon. Returns true when this
-- changed the user's room-wide presence (and announces it).
create or replace function pgchat.presence_set(daemon uuid, room bigint, uid bigint, online boolean)
returns boolean
language plpgsql security definer set search_path = pgchat, public as $$
declare
  others boolean;
begin
  -- Serialise changes for one (room, user) so exactly one daemon announces.
  perform pg_advisory_xact_lock(hashtextextended('pgchat.presence:' || room || ':' || uid, 0));
  select exists (select 1 from pgchat.presence
                  where room_id = room and user_id = uid and daemon_id <> daemon)
    into others;
  if online then
    insert into pgchat.presence values (daemon, room, uid) on conflict do nothing;
  else
    delete from pgchat.presence where daemon_id = daemon and room_id = room and user_id = uid;
  end if;
  if not others and found then
    perform pgchat.presence_logged(room, uid, online);
    perform pgchat.ring_presence(room);
  end if;
  return not others;
end
$$;

-- Refreshes this daemon's heartbeat, drops daemons silent for longer than `stale`
-- (announcing users who were only on them as gone), and returns how many were swept.
create or replace function pgchat.daemon_heartbeat(daemon uuid, stale interval) returns integer
language plpgsql security definer set search_path = pgchat, public as $$
declare
  gone_rooms bigint[];
  gone_users bigint[];
  offline boolean[];
  swept integer := 0;
begin
  insert into pgchat.daemons (id) values (daemon)
  on conflict (id) do update set seen_at = now();
  -- The rows of silent daemons, deleted in one statement (another daemon sweeping at the
  -- same time takes the rows this one has locked, and the rest are skipped), then the
  -- users no daemon holds any more in a room are logged gone from it: one statement each,
  -- not a loop over rows (a dead daemon of 12,500 sockets took a second to sweep).
  with claimed as (
    select p.room_id, p.user_id, p.daemon_id
      from pgchat.presence p left join pgchat.daemons d on d.id = p.daemon_id
     where d.id is null or d.seen_at < now() - stale
     for update of p skip locked
  ), gone as (
    delete from pgchat.presence p using claimed c
     where p.daemon_id = c.daemon_id and p.room_id = c.room_id and p.user_id = c.user_id
    returning p.room_id, p.user_id
  )
  select array_agg(g.room_id), array_agg(g.user_id) into gone_rooms, gone_users from gone g;
  if gone_rooms is not null then
    -- This statement sees the deletion above.
    select array_agg(x.r), array_agg(x.u), array_agg(false)
      into gone_rooms, gone_users, offline
      from (select distinct g.r, g.u from unnest(gone_rooms, gone_users) as g(r, u)
             where not exists (select 1 from pgchat.presence o
                                where o.room_id = g.r and o.user_id = g.u)) as x;
    if gone_rooms is not null then
      perform pgchat.presence_log_batch(gone_rooms, gone_users, offline);
    end if;
  end if;
  -- A daemon reads the log within moments of each doorbell; one that fell further behind
  -- than this reads the whole room instead (it finds a gap in the revs).
  delete from pgchat.presence_log where logged_at < now() - interval '5 minutes';
  delete from pgchat.daemons where seen_at < now() - stale;
  get diagnostics swept = row_count;
  -- Typing rows that ran out long ago (each delete rings its room, which reads nothing new).
  delete from private.typing where expires_at < now() - interval '1 minute';
  return swept;
end
$$;

-- A daemon shutting down cleanly clears its rows itself, announcing departures.
create or replace function pgchat.daemon_stop(daemon uuid) returns void
language plpgsql security definer set search_path = pgchat, public as $$
declare
  p record;
begin
  for p in select room_id, user_id from pgchat.presence where daemon_id = daemon
           order by room_id, user_id loop
    perform pgchat.presence_set(daemon, p.room_id, p.user_id, false);
  end loop;
  delete from pgchat.daemons where id = daemon;
end
$$;

grant execute on function
  pgchat.presence_set(uuid, bigint, bigint, boolean),
  pgchat.daemon_heartbeat(uuid, interval), pgchat.daemon_stop(uuid)
  to authenticator;

-- Functions are executable by PUBLIC by default; only the daemon may call these.
revoke execute on function
  pgchat.ring_presence(bigint), pgchat.presence_set(uuid, bigint, bigint, boolean),
  pgchat.daemon_heartbeat(uuid, interval), pgchat.daemon_stop(uuid)
  from public;

-- Applies a batch of presence changes from one daemon in one transaction, announcing
-- in as few NOTIFYs as fit: every notifying commit takes PostgreSQL's global NOTIFY lock,
-- so one commit per join would serialise all joins. `changes` is a JSON array of
-- {"room":…, "user":…, "online":…} in the order they happened; the last change of each
-- (room, user) is the state to reach, so a user who came and went within one batch is
-- never announced. Set-based (a handful of statements per batch, not several per change):
-- a 10,000-socket join storm writes its presence at half the cost of a loop.
create or replace function pgchat.presence_apply(daemon uuid, changes json) returns integer
language plpgsql security definer set search_path = pgchat, public as $$
declare
  rooms bigint[];
  users bigint[];
  onlines boolean[];
begin
  -- Serialise changes for each (room, user) across daemons, so exactly one daemon
  -- announces; in (room, user) order, so two daemons' batches cannot deadlock.
  perform pg_advisory_xact_lock(hashtextextended('pgchat.presence:' || k.room || ':' || k.uid, 0))
     from (select distinct (e->>'room')::bigint as room, (e->>'user')::bigint as uid
             from json_array_elements(changes) as x(e)
            order by 1, 2) as k;
  -- One statement, whose snapshot is taken after the locks: it sees every other daemon's
  -- committed rows for these users.
  with wanted as (
    select l.room, l.uid, l.online,
           -- A user another daemon holds stays online in the room whatever happens here.
           exists (select 1 from pgchat.presence o
                    where o.room_id = l.room and o.user_id = l.uid and o.daemon_id <> daemon)
             as others
      from (select distinct on (room, uid) room, uid, online
              from (select (e->>'room')::bigint as room, (e->>'user')::bigint as uid,
                           (e->>'online')::boolean as online, n
                      from json_array_elements(changes) with ordinality as x(e, n)) as c
             order by room, uid, n desc) as l
  ), added as (
    insert into pgchat.presence (daemon_id, room_id, user_id)
    select daemon, w.room, w.uid from wanted w where w.online
    on conflict do nothing
    returning room_id, user_id, true as online
  ), removed as (
    delete from pgchat.presence p using wanted w
     where not w.online and p.daemon_id = daemon and p.room_id = w.room and p.user_id = w.uid
    returning p.room_id, p.user_id, false as online
  )
  -- Room-wide changes only.
  select array_agg(c.room_id), array_agg(c.user_id), array_agg(c.online)
    into rooms, users, onlines
    from (select * from added union all select * from removed) as c
    join wanted w on w.room = c.room_id and w.uid = c.user_id
   where not w.others;
  if rooms is null then
    return 0;
  end if;
  return pgchat.presence_log_batch(rooms, users, onlines);
end
$$;

-- Who is online in each of these rooms, with display names: what a presence doorbell
-- makes the daemons read.
create or replace function pgchat.presence_in(rooms bigint[])
returns table (room_id bigint, user_id bigint, name text)
language sql stable security definer set search_path = pgchat, public as $$
  select distinct p.room_id, p.user_id, u.name
    from pgchat.presence p join private.users u on u.id = p.user_id
   where p.room_id = any (rooms);
$$;

-- The presence changes of several rooms after the rev the daemon holds for each, in rev
-- order within each room: what a presence doorbell makes the daemons read (one
-- statement per burst, whatever rang). A daemon that finds the revs it gets do not
-- follow on from its own reads the room whole (presence_snapshot).
-- Each room's log is read by its index, whatever the tables' statistics say: as a join,
-- the planner hashed the whole log and the whole users table for every burst (3.5 ms
-- per read with a 15,000-row log, growing with it), as the log of a join storm is
-- written faster than it is analysed. A lateral subquery with its own ORDER BY is not
-- flattened into a join.
create or replace function pgchat.presence_after(rooms bigint[], after_revs bigint[])
returns table (room_id bigint, rev bigint, user_id bigint, online boolean, name text)
language plpgsql stable security definer set search_path = pgchat, public as $$
#variable_conflict use_column
begin
  return query
  select p.room_id, l.rev, l.user_id, l.online,
         (select u.name from private.users u where u.id = l.user_id)
    from unnest(rooms, after_revs) with ordinality as p(room_id, after_rev, ord)
    cross join lateral (
      select l.rev, l.user_id, l.online from pgchat.presence_log l
       where l.room_id = p.room_id and l.rev > p.after_rev
       order by l.rev) as l
   order by p.ord, l.rev;
end
$$;

-- Who is online in each of these rooms with the room's presence rev, read in one
-- snapshot; a room nobody is in has one row with no user.
create or replace function pgchat.presence_snapshot(rooms bigint[])
returns table (room_id bigint, rev bigint, user_id bigint, name text)
language plpgsql stable security definer set search_path = pgchat, public as $$
#variable_conflict use_column
begin
  return query
  select r.room_id, coalesce(pr.rev, 0), o.user_id, o.name
    from unnest(rooms) as r(room_id)
    left join pgchat.presence_rooms pr on pr.room_id = r.room_id
    left join lateral (
      select distinct p.user_id, u.name
        from pgchat.presence p join private.users u on u.id = p.user_id
       where p.room_id = r.room_id
    ) o on true;
end
$$;

-- Users online in a room plus `local`: the asking daemon's own subscribers, whose rows
-- may still be in its next batch.
create or replace function pgchat.presence_online_plus(room bigint, local bigint[]) returns json
language sql stable security definer set search_path = pgchat, public as $$
  select coalesce(json_agg(json_build_object('id', u.id, 'name', u.name) order by u.id), '[]'::json)
    from private.users u
   where u.id = any (array(select p.user_id from pgchat.presence p where p.room_id = room)
                     || coalesce(local, '{}'));
$$;

revoke execute on function
  pgchat.presence_log_batch(bigint[], bigint[], boolean[]),
  pgchat.presence_apply(uuid, json), pgchat.presence_online_plus(bigint, bigint[]),
  pgchat.presence_in(bigint[]), pgchat.presence_logged(bigint, bigint, boolean),
  pgchat.presence_after(bigint[], bigint[]), pgchat.presence_snapshot(bigint[])
  from public;
grant execute on function
  pgchat.presence_apply(uuid, json), pgchat.presence_online_plus(bigint, bigint[]),
  pgchat.presence_in(bigint[]), pgchat.presence_after(bigint[], bigint[]),
  pgchat.presence_snapshot(bigint[])
  to authenticator;

-- Typing is ephemeral but still a row written as the user (RLS: only members, only as
-- themselves), by the socket and by `api.set_typing` through PostgREST alike. Its doorbell
-- names only the room; the daemons read who is typing from here (typing_in), so a forged
-- doorbell finds nothing new. The table is migration 0002's.
revoke all on private.typing from public, anon, authenticated;
grant select, insert, update, delete on private.typing to authenticated;

drop policy if exists typing_select on private.typing;
create policy typing_select on private.typing for select to authenticated
  using (user_id = api.current_user_id());
drop policy if exists typing_insert on private.typing;
create policy typing_insert on private.typing for insert to authenticated
  with check (user_id = api.current_user_id() and private.is_member(room_id));
drop policy if exists typing_update on private.typing;
create policy typing_update on private.typing for update to authenticated
  using (user_id = api.current_user_id())
  with check (user_id = api.current_user_id() and private.is_member(room_id));
drop policy if exists typing_delete on private.typing;
create policy typing_delete on private.typing for delete to authenticated
  using (user_id = api.current_user_id());

-- Starts (or refreshes) or stops my typing indicator in a room; it ends by itself 5 s
-- after the last start. A refresh within 2 s of the previous one writes nothing, so a
-- client calling this on every keystroke rings no doorbell for most of them.
create or replace function api.set_typing(room_id bigint, is_typing boolean) returns json
language plpgsql set search_path = api, public as $$
declare
  uid bigint := private.require_user();
begin
  if is_typing then
    insert into private.typing as t (room_id, user_id, expires_at)
    values (set_typing.room_id, uid, now() + interval '5 seconds')
    on conflict on constraint typing_pkey do update set expires_at = excluded.expires_at
     where t.expires_at < now() + interval '3 seconds';
  else
    delete from private.typing t where t.room_id = set_typing.room_id and t.user_id = uid;
  end if;
  return json_build_object('room_id', set_typing.room_id, 'is_typing', set_typing.is_typing);
end
$$;

create or replace function private.notify_typing() returns trigger
language plpgsql security definer set search_path = private, public as $$
begin
  perform pg_notify(pgchat.channel(),
    't:' || case tg_op when 'DELETE' then old.room_id else new.room_id end);
  return null;
end
$$;

drop trigger if exists typing_notify on private.typing;
create trigger typing_notify
  after insert or update or delete on private.typing
  for each row execute function private.notify_typing();

-- Sending a message ends the sender's typing indicator.
create or replace function private.end_typing_on_message() returns trigger
language plpgsql security definer set search_path = private, public as $$
begin
  delete from private.typing t where t.room_id = new.room_id and t.user_id = new.user_id;
  return null;
end
$$;

drop trigger if exists chat_messages_end_typing on api.chat_messages;
create trigger chat_messages_end_typing
  after insert on api.chat_messages
  for each row execute function private.end_typing_on_message();

-- Who is typing in each of these rooms now, and for how many more milliseconds.
create or replace function pgchat.typing_in(rooms bigint[])
returns table (room_id bigint, user_id bigint, name text, expires_in_ms bigint)
language sql stable security definer set search_path = private, public as $$
  select t.room_id, t.user_id, u.name,
         (extract(epoch from (t.expires_at - now())) * 1000)::bigint
    from private.typing t join private.users u on u.id = t.user_id
   where t.room_id = any (rooms) and t.expires_at > now();
$$;

revoke execute on function
  api.set_typing(bigint, boolean), private.notify_typing(), private.end_typing_on_message(),
  pgchat.typing_in(bigint[])
  from public;
grant execute on function api.set_typing(bigint, boolean) to authenticated;
grant execute on function pgchat.typing_in(bigint[]) to authenticator;
