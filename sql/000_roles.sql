-- Roles and schemas, following PostgREST's conventions (POSTGREST.md §3).
-- `authenticator` is the only login role: PostgREST and pgchat both connect as it and
-- switch to the user's role per transaction. It has no privileges of its own (NOINHERIT).

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end
$$;

grant anon, authenticated to authenticator;

create extension if not exists pgcrypto;

-- `api` is the schema PostgREST exposes; `private` holds what no client may touch;
-- `pgchat` holds the narrow privileged functions the daemon itself calls.
create schema if not exists api;
create schema if not exists private;
create schema if not exists pgchat;

grant usage on schema api to anon, authenticated;
revoke all on schema private from public;
revoke all on schema pgchat from public;
grant usage on schema pgchat to authenticator;

-- New functions in the private schemas are not callable by everyone by default.
alter default privileges in schema private revoke execute on functions from public;
alter default privileges in schema pgchat revoke execute on functions from public;
