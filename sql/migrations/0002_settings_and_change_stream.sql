-- What main gained after v0.1.0 and before this file existed (issues 11 and 12): the
-- signing key and the NOTIFY channel in private tables, the room change stream (`rev`),
-- recorded changes without a row of their own, and typing rows. Written with
-- `if not exists` like 0001, so a database made by those unreleased builds upgrades too.

-- The token signing key and the NOTIFY channel. Both used to be database settings
-- (`ALTER DATABASE … SET`), which every role that can connect reads and every session
-- can shadow. Tables owned by the migration owner, with no grant to anyone, are
-- neither: only SECURITY DEFINER functions of that owner read them. migrate writes
-- both after the migrations and before the definitions.

-- Signing keys. Today one row: kid '' holds JWT_SECRET (decoded when
-- JWT_SECRET_IS_BASE64 is set), alg HS256. The kid column is there for keys given as
-- an `oct` JWK with their own kid; `active` marks the one key tokens are signed with.
create table if not exists private.jwt_keys (
  kid        text primary key default '',
  alg        text not null default 'HS256' check (alg = 'HS256'),
  secret     bytea not null check (octet_length(secret) > 0),
  active     boolean not null default true,
  created_at timestamptz not null default now()
);

create unique index if not exists jwt_keys_one_active on private.jwt_keys ((true)) where active;

-- One row (the `singleton` key can only be true). The channel rules are config.rs's:
-- what LISTEN accepts unquoted, and never PostgREST's `pgrst`.
create table if not exists private.settings (
  singleton      boolean primary key default true check (singleton),
  notify_channel text not null
    check (notify_channel ~ '^[a-z0-9_]{1,63}$' and notify_channel <> 'pgrst')
);

revoke all on private.jwt_keys, private.settings from public, anon, authenticated, authenticator;

-- v0.1.0 functions that no longer exist under these signatures. A function whose
-- signature changes is dropped, never left as an overload: PostgREST cannot choose
-- between overloads called with named arguments (PGRST203).
drop function if exists private.jwt_sign(json, text);
drop function if exists pgchat.messages_after(bigint, bigint, integer);
drop function if exists pgchat.notify_presence(bigint, bigint, boolean);
drop function if exists pgchat.notify_typing(bigint, bigint, boolean);
drop function if exists pgchat.presence_join(uuid, bigint, bigint);
drop function if exists pgchat.presence_online(bigint);
drop function if exists pgchat.presence_online_with(bigint, bigint);

-- v0.1.0's notify trigger sent each updated row whole: the backfill below must not
-- ring it a million times. The definitions create today's trigger after the migrations.
drop trigger if exists chat_messages_notify on api.chat_messages;

-- The room change stream: every change to a room's visible state takes the room's next
-- `rev` under the room row lock, as a message takes its seq. Existing messages get
-- rev = seq and rooms last_rev = last_seq: the stream so far was the messages.
alter table api.chat_rooms add column if not exists last_rev bigint;
update api.chat_rooms set last_rev = last_seq where last_rev is null;
alter table api.chat_rooms alter column last_rev set default 0;
alter table api.chat_rooms alter column last_rev set not null;
alter table api.chat_messages add column if not exists rev bigint;
update api.chat_messages set rev = seq where rev is null;
alter table api.chat_messages alter column rev set not null;

create index if not exists idx_messages_room_rev on api.chat_messages (room_id, rev);

-- Changes without a row of their own to carry a rev: memberships, read markers (and
-- hard deletions, which 0003 ends). One row per (room, kind, key), updated in place, so
-- the table grows with members, not with traffic.
create table if not exists private.room_changes (
  room_id    bigint not null,
  kind       text not null check (kind in ('deleted', 'member', 'read')),
  -- The message id (deleted) or the user id (member, read).
  key        bigint not null,
  rev        bigint not null,
  -- deleted: the message's seq; read: the read marker.
  seq        bigint,
  -- member: true while a member.
  present    boolean,
  changed_at timestamptz not null default now(),
  primary key (room_id, kind, key)
);
create index if not exists idx_room_changes_rev on private.room_changes (room_id, rev);
revoke all on private.room_changes from public, anon, authenticated;

-- Typing is a row written as the user (RLS in the definitions). UNLOGGED: nothing of
-- it needs to survive a crash.
create unlogged table if not exists private.typing (
  room_id    bigint not null,
  user_id    bigint not null default api.current_user_id(),
  expires_at timestamptz not null,
  primary key (room_id, user_id)
);
alter table private.typing enable row level security;

-- v0.1.0's migrate, run against this database by mistake (an old daemon started with
-- `serve --migrate`), finds its own files recorded and applies nothing; on a database
-- that v0.1.0 never saw it would re-create its old functions. This makes it stop at its
-- first file, rolled back, with a line that says why.
create or replace function pgchat.refuse_legacy_migrate() returns trigger
language plpgsql as $$
begin
  raise exception 'this database is migrated by a newer pgchat (pgchat.schema_migrations): run that release''s migrate'
    using errcode = '55000';
end
$$;
revoke execute on function pgchat.refuse_legacy_migrate() from public;
drop trigger if exists migrations_refuse_legacy on pgchat.migrations;
create trigger migrations_refuse_legacy
  before insert or update or delete on pgchat.migrations
  for each row execute function pgchat.refuse_legacy_migrate();
