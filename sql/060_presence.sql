-- Presence shared by every pgchat daemon on this database. A user is online in a room
-- while any daemon holds a socket of theirs joined to it; `user_joined`/`user_left` are
-- announced once per user, not per socket or per daemon. Daemons heartbeat; a daemon
-- that stops heartbeating is swept and its users announced gone.
-- UNLOGGED: presence is soft state, rebuilt by live daemons after a crash.

create unlogged table if not exists pgchat.daemons (
  id      uuid primary key,
  seen_at timestamptz not null default now()
);

-- No foreign key to daemons: every join would take a key-share lock on its daemon's
-- row. Rows of daemons that are gone or silent are swept by daemon_heartbeat.
create unlogged table if not exists pgchat.presence (
  daemon_id uuid   not null,
  room_id   bigint not null,
  user_id   bigint not null,
  primary key (room_id, user_id, daemon_id)
);

alter table pgchat.presence drop constraint if exists presence_daemon_id_fkey;
create index if not exists idx_presence_daemon on pgchat.presence (daemon_id);

create or replace function pgchat.notify_presence(room bigint, uid bigint, online boolean) returns void
language sql security definer set search_path = pgchat, public as $$
  select pg_notify(pgchat.channel(), json_build_object(
    't', 'presence', 'room_id', room, 'user_id', uid,
    'user_name', private.display_name(uid), 'online', online)::text);
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
  if not others then
    perform pgchat.notify_presence(room, uid, online);
  end if;
  return not others;
end
$$;

-- Refreshes this daemon's heartbeat, drops daemons silent for longer than `stale`
-- (announcing users who were only on them as gone), and returns how many were swept.
create or replace function pgchat.daemon_heartbeat(daemon uuid, stale interval) returns integer
language plpgsql security definer set search_path = pgchat, public as $$
declare
  gone record;
  swept integer := 0;
begin
  insert into pgchat.daemons (id) values (daemon)
  on conflict (id) do update set seen_at = now();
  for gone in
    select p.room_id, p.user_id, p.daemon_id
      from pgchat.presence p left join pgchat.daemons d on d.id = p.daemon_id
     where d.id is null or d.seen_at < now() - stale
     for update of p skip locked
  loop
    delete from pgchat.presence
     where daemon_id = gone.daemon_id and room_id = gone.room_id and user_id = gone.user_id;
    if not exists (select 1 from pgchat.presence
                    where room_id = gone.room_id and user_id = gone.user_id) then
      perform pgchat.notify_presence(gone.room_id, gone.user_id, false);
    end if;
  end loop;
  delete from pgchat.daemons where seen_at < now() - stale;
  get diagnostics swept = row_count;
  return swept;
end
$$;

-- A daemon shutting down cleanly clears its rows itself, announcing departures.
create or replace function pgchat.daemon_stop(daemon uuid) returns void
language plpgsql security definer set search_path = pgchat, public as $$
declare
  p record;
begin
  for p in select room_id, user_id from pgchat.presence where daemon_id = daemon loop
    perform pgchat.presence_set(daemon, p.room_id, p.user_id, false);
  end loop;
  delete from pgchat.daemons where id = daemon;
end
$$;

-- Typing is ephemeral: relayed through NOTIFY so every daemon's sockets see it.
create or replace function pgchat.notify_typing(room bigint, uid bigint, is_typing boolean) returns void
language sql security definer set search_path = pgchat, public as $$
  select pg_notify(pgchat.channel(), json_build_object(
    't', 'typing', 'room_id', room, 'user_id', uid,
    'user_name', private.display_name(uid), 'is_typing', is_typing)::text);
$$;

grant execute on function
  pgchat.presence_set(uuid, bigint, bigint, boolean),
  pgchat.daemon_heartbeat(uuid, interval), pgchat.daemon_stop(uuid),
  pgchat.notify_typing(bigint, bigint, boolean)
  to authenticator;

-- Replaced by presence_apply (batched) and presence_online_with.
drop function if exists pgchat.presence_join(uuid, bigint, bigint);
drop function if exists pgchat.presence_online(bigint);

-- Functions are executable by PUBLIC by default; only the daemon may call these.
revoke execute on function
  pgchat.notify_presence(bigint, bigint, boolean), pgchat.presence_set(uuid, bigint, bigint, boolean),
  pgchat.daemon_heartbeat(uuid, interval), pgchat.daemon_stop(uuid),
  pgchat.notify_typing(bigint, bigint, boolean)
  from public;

-- Applies a batch of presence changes from one daemon in one transaction, announcing
-- in as few NOTIFYs as fit: every notifying commit takes PostgreSQL's global NOTIFY lock,
-- so one commit per join would serialise all joins. `changes` is a JSON array of
-- {"room":…, "user":…, "online":…} in the order they happened. Locks are taken in
-- (room, user) order so two daemons' batches cannot deadlock.
create or replace function pgchat.presence_apply(daemon uuid, changes json) returns integer
language plpgsql security definer set search_path = pgchat, public as $$
declare
  c record;
  others boolean;
  ev text;
  batch text[] := '{}';
  size integer := 0;
  announced integer := 0;
begin
  for c in
    select (e->>'room')::bigint as room, (e->>'user')::bigint as uid, (e->>'online')::boolean as online
      from json_array_elements(changes) with ordinality as x(e, n)
     order by 1, 2, n
  loop
    perform pg_advisory_xact_lock(hashtextextended('pgchat.presence:' || c.room || ':' || c.uid, 0));
    select exists (select 1 from pgchat.presence
                    where room_id = c.room and user_id = c.uid and daemon_id <> daemon)
      into others;
    if c.online then
      insert into pgchat.presence values (daemon, c.room, c.uid) on conflict do nothing;
    else
      delete from pgchat.presence where daemon_id = daemon and room_id = c.room and user_id = c.uid;
    end if;
    continue when others;
    ev := json_build_object('room_id', c.room, 'user_id', c.uid,
                            'user_name', private.display_name(c.uid), 'online', c.online)::text;
    if size + octet_length(ev) > 7600 then
      perform pg_notify(pgchat.channel(), '{"t":"presence_batch","events":[' || array_to_string(batch, ',') || ']}');
      batch := '{}';
      size := 0;
    end if;
    batch := batch || ev;
    size := size + octet_length(ev) + 1;
    announced := announced + 1;
  end loop;
  if size > 0 then
    perform pg_notify(pgchat.channel(), '{"t":"presence_batch","events":[' || array_to_string(batch, ',') || ']}');
  end if;
  return announced;
end
$$;

-- Users online in a room plus `me` (whose own arrival may still be in a batch).
create or replace function pgchat.presence_online_with(room bigint, me bigint) returns json
language sql stable security definer set search_path = pgchat, public as $$
  select coalesce(json_agg(json_build_object('id', u.id, 'name', u.name) order by u.id), '[]'::json)
    from private.users u
   -- An id array keeps this an index lookup whatever the (unlogged, rarely analysed)
   -- presence table's statistics say.
   where u.id = any (array(select p.user_id from pgchat.presence p where p.room_id = room) || me);
$$;

revoke execute on function pgchat.presence_apply(uuid, json), pgchat.presence_online_with(bigint, bigint) from public;
grant execute on function pgchat.presence_apply(uuid, json), pgchat.presence_online_with(bigint, bigint) to authenticator;
