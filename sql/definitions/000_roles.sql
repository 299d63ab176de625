-- Grants on the roles and schemas of migration 0001, following PostgREST's conventions.
-- `authenticator` switches to `anon` or `authenticated` per transaction.

grant anon, authenticated to authenticator;

grant usage on schema api to anon, authenticated;
revoke all on schema private from public;
revoke all on schema pgchat from public;
grant usage on schema pgchat to authenticator;

-- New functions in the private schemas are not callable by everyone by default.
alter default privileges in schema private revoke execute on functions from public;
alter default privileges in schema pgchat revoke execute on functions from public;

-- The settings tables (migration 0002) are read only by SECURITY DEFINER functions of
-- their owner: api.login and api.signup for the key, pgchat.channel() for the channel.
revoke all on private.jwt_keys, private.settings from public, anon, authenticated, authenticator;
