-- pgchat prepares each statement once per pooled connection, before the per-request
-- `set_config('role', …)`, so the parser must resolve names in `api` as `authenticator`.
-- Schema USAGE only lets it see names: every privilege (tables, functions, RLS) is still
-- checked at execution time against the user's role, exactly as under PostgREST.
grant usage on schema api to authenticator;
-- The same for `private`, whose display_name the join statement calls (as the user).
grant usage on schema private to authenticator;
