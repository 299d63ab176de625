-- The schema of release v0.1.0: roles, schemas, tables and indexes. Its functions,
-- views, policies and grants are definitions (sql/definitions), re-applied after the
-- migrations. v0.1.0 created all of this with `if not exists` files and no version
-- table, so this migration adopts such a database as it is: every statement here is a
-- no-op against it, and creates the same objects in an empty one.

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin;
  end if;
  -- The only login role: PostgREST and pgchat connect as it and switch to the user's
  -- role per transaction. No privileges of its own (NOINHERIT).
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end
$$;

create extension if not exists pgcrypto;

-- `api` is the schema PostgREST exposes; `private` holds what no client may touch;
-- `pgchat` holds the narrow privileged functions the daemon itself calls.
create schema if not exists api;
create schema if not exists private;
create schema if not exists pgchat;

-- Column defaults below call it, so it exists before the tables (its definition in
-- sql/definitions/010_auth.sql replaces it with the same body).
create or replace function api.current_user_id() returns bigint
language sql stable as $$
  select nullif(current_setting('request.jwt.claims', true)::json->>'sub', '')::bigint;
$$;

create table if not exists private.users (
  id            bigint generated always as identity primary key,
  email         text not null unique check (email ~ '^[^@\s]+@[^@\s]+$'),
  name          text not null check (char_length(name) between 1 and 100),
  password_hash text not null,
  created_at    timestamptz not null default now()
);

create table if not exists api.chat_rooms (
  id          bigint generated always as identity primary key,
  name        text not null check (char_length(name) between 1 and 100),
  description text not null default '' check (char_length(description) <= 1000),
  created_by  bigint not null default api.current_user_id() references private.users(id),
  created_at  timestamptz not null default now(),
  -- Highest seq handed out in this room. Incremented under the row lock by the message
  -- insert trigger, so seqs are gap-free and commit in order within a room.
  last_seq    bigint not null default 0
);

create table if not exists api.room_members (
  id            bigint generated always as identity primary key,
  room_id       bigint not null references api.chat_rooms(id) on delete cascade,
  user_id       bigint not null default api.current_user_id() references private.users(id),
  joined_at     timestamptz not null default now(),
  last_read_seq bigint not null default 0 check (last_read_seq >= 0),
  unique (room_id, user_id)
);

create table if not exists api.chat_messages (
  id         bigint generated always as identity primary key,
  room_id    bigint not null references api.chat_rooms(id) on delete cascade,
  seq        bigint not null,
  user_id    bigint not null default api.current_user_id() references private.users(id),
  message    text not null,
  client_id  text,
  created_at timestamptz not null default now(),
  constraint chat_messages_message_not_empty check (char_length(message) >= 1),
  constraint chat_messages_message_too_long check (char_length(message) <= 5000),
  constraint chat_messages_client_id_length check (char_length(client_id) between 1 and 100),
  unique (room_id, seq),
  unique (room_id, user_id, client_id)
);

create index if not exists idx_room_members_user on api.room_members (user_id);
create index if not exists idx_room_members_room on api.room_members (room_id);
create index if not exists idx_messages_room_time on api.chat_messages (room_id, created_at desc);

alter table api.chat_rooms    enable row level security;
alter table api.room_members  enable row level security;
alter table api.chat_messages enable row level security;

-- Presence is soft state, rebuilt by live daemons after a crash: UNLOGGED. No foreign
-- key to daemons: every join would take a key-share lock on its daemon's row.
create unlogged table if not exists pgchat.daemons (
  id      uuid primary key,
  seen_at timestamptz not null default now()
);

create unlogged table if not exists pgchat.presence (
  daemon_id uuid   not null,
  room_id   bigint not null,
  user_id   bigint not null,
  primary key (room_id, user_id, daemon_id)
);

create index if not exists idx_presence_daemon on pgchat.presence (daemon_id);

-- v0.1.0's migrate recorded its files here (by name and md5). Kept, with its rows, so
-- that a v0.1.0 `migrate` run against this database later finds its files applied;
-- 0002 makes it refuse new rows (see docs/migrations.md).
create table if not exists pgchat.migrations (
  name       text primary key,
  checksum   text not null,
  applied_at timestamptz not null default now()
);
revoke all on pgchat.migrations from public;
