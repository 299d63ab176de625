-- What `pgchat migrate` writes besides the schema: the token signing key and the
-- NOTIFY channel. Both used to be database settings (`ALTER DATABASE … SET`), which
-- every role that can connect reads (`current_setting`, SHOW, pg_db_role_setting) and
-- every session can shadow (`set_config`). Tables owned by the migration owner, with no
-- grant to anyone, are neither: only SECURITY DEFINER functions of that owner read
-- them (api.login and api.signup for the key, pgchat.channel() for the channel).
-- migrate writes both right after this file, before the files that read them.

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
