-- In-database login (stands in for the host app's own auth); users are a table of
-- migration 0001.
-- Tokens are signed in SQL with HS256, the pgjwt `sign()` algorithm, so that PostgREST
-- and pgchat both accept them with the same secret. The key is the active row of
-- `private.jwt_keys` (migration 0002), which only the owner of api.login and api.signup reads.

create or replace function private.url_encode(data bytea) returns text
language sql immutable strict as $$
  select translate(encode(data, 'base64'), E'+/=\n', '-_');
$$;

-- The key is bytes, not text: a base64 JWT_SECRET decodes to any bytes, and PostgREST
-- verifies with the decoded bytes.
create or replace function private.jwt_sign(payload json, key bytea) returns text
language sql immutable strict as $$
  with parts as (
    select private.url_encode(convert_to('{"alg":"HS256","typ":"JWT"}', 'utf8')) as header,
           private.url_encode(convert_to(payload::text, 'utf8')) as body
  )
  select header || '.' || body || '.' ||
         private.url_encode(hmac(convert_to(header || '.' || body, 'utf8'), key, 'sha256'))
  from parts;
$$;

-- The one place that maps claims to a user id. NULL when there is no `sub`.
create or replace function api.current_user_id() returns bigint
language sql stable as $$
  select nullif(current_setting('request.jwt.claims', true)::json->>'sub', '')::bigint;
$$;

-- Not SECURITY DEFINER: it reads the key only as the owner of its callers, api.login
-- and api.signup. No one else may execute it, and no one else could read the key.
-- PL/pgSQL, to refuse clearly when there is no key: migrate has not run, or JWT_SECRET
-- is a JWK / JWK Set without an `oct` key (SQL signs HS256 only). A key with a `kid`
-- names it in the header, so the daemon and PostgREST try that key alone.
create or replace function private.token_for(u private.users) returns text
language plpgsql stable as $$
declare
  k private.jwt_keys;
  payload json;
  head_body text;
begin
  select * into k from private.jwt_keys where active;
  if not found then
    raise exception 'no key to sign tokens with: JWT_SECRET needs a plain secret or an oct JWK, then run pgchat migrate'
      using errcode = '55000';
  end if;
  payload := json_build_object(
      'sub',  u.id::text,
      'role', 'authenticated',
      'name', u.name,
      'iat',  extract(epoch from now())::bigint,
      'exp',  extract(epoch from now() + interval '24 hours')::bigint);
  if k.kid = '' then
    return private.jwt_sign(payload, k.secret);
  end if;
  head_body := private.url_encode(convert_to(
                 json_build_object('alg', 'HS256', 'typ', 'JWT', 'kid', k.kid)::text, 'utf8'))
               || '.' || private.url_encode(convert_to(payload::text, 'utf8'));
  return head_body || '.' ||
         private.url_encode(hmac(convert_to(head_body, 'utf8'), k.secret, 'sha256'));
end
$$;

create or replace function api.signup(email text, password text, name text) returns json
language plpgsql security definer set search_path = private, public as $$
declare
  u private.users;
begin
  if password is null or char_length(password) < 8 then
    raise exception 'password must be at least 8 characters' using errcode = '22023';
  end if;
  insert into private.users (email, name, password_hash)
  values (lower(signup.email), signup.name, crypt(password, gen_salt('bf')))
  returning * into u;
  return json_build_object('id', u.id, 'name', u.name, 'token', private.token_for(u));
exception
  when unique_violation then
    raise exception 'email already registered' using errcode = '23505';
end
$$;

create or replace function api.login(email text, password text) returns json
language plpgsql security definer set search_path = private, public as $$
declare
  u private.users;
begin
  select * into u from private.users where users.email = lower(login.email);
  if not found or u.password_hash <> crypt(password, u.password_hash) then
    raise exception 'invalid email or password' using errcode = '28P01';
  end if;
  return json_build_object('id', u.id, 'name', u.name, 'token', private.token_for(u));
end
$$;

-- Display names are shown beside messages; only the name, never email or hash.
-- PL/pgSQL, not SQL: a SECURITY DEFINER SQL function is never inlined, so its body is
-- parsed and planned again in every statement that calls it; PL/pgSQL keeps the plan
-- for the connection's life. It runs for every presence change and typing event.
create or replace function private.display_name(user_id bigint) returns text
language plpgsql stable security definer set search_path = private as $$
begin
  return (select u.name from private.users u where u.id = display_name.user_id);
end
$$;

grant usage on schema private to anon, authenticated;
revoke all on all tables in schema private from anon, authenticated;
revoke execute on all functions in schema private from public;
grant execute on function private.display_name(bigint) to authenticated;
grant execute on function api.signup(text, text, text), api.login(text, text) to anon, authenticated;
grant execute on function api.current_user_id() to anon, authenticated;
