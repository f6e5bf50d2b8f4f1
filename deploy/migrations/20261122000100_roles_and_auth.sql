-- 20261122000100_roles_and_auth.sql
--
-- Creates the API roles (anon, authenticated, service_role), the auth schema with auth.uid() and
-- auth.jwt(), and the empty `walcast` schema that holds the policy helper functions. Everything
-- is created only when missing, so the same file runs unchanged on a Supabase project, where the
-- roles and the auth functions already exist and belong to Supabase (they are left untouched).
-- The replication role walcast_replicator is created in 20261122000400_replication.sql.
--
-- Rollback (only on a plain PostgreSQL where this file created them; never on Supabase):
--   drop schema if exists walcast cascade;
--   drop function if exists auth.jwt();
--   drop function if exists auth.uid();
--   drop schema if exists auth;          -- only if now empty
--   drop role if exists anon; drop role if exists authenticated; drop role if exists service_role;
--   (run the later migrations' rollbacks first: roles cannot be dropped while they hold grants)

begin;
-- Quiet the "already exists, skipping" notices of a rerun; warnings and errors still show.
set local client_min_messages = warning;

-- The three API roles. They never log in themselves: a pooler or PostgREST connects as an
-- authenticator role and does SET ROLE. service_role bypasses RLS, as on Supabase.
do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

-- auth.uid() and auth.jwt(): the user is the JWT `sub` claim, read from the request.jwt.claims
-- setting. Both return NULL (never fail) when the setting is missing or empty, so a session
-- without claims simply sees nothing. On Supabase they already exist and are not replaced.
do $$
begin
  if not exists (select 1 from pg_catalog.pg_namespace where nspname = 'auth') then
    create schema auth;
    grant usage on schema auth to anon, authenticated, service_role;
  end if;

  if not exists (select 1 from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                 where n.nspname = 'auth' and p.proname = 'jwt' and p.pronargs = 0) then
    create function auth.jwt() returns jsonb
      language sql stable
      set search_path = ''
    as $f$
      select nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb
    $f$;
    comment on function auth.jwt() is 'The JWT claims of the current request (request.jwt.claims), or NULL.';
    grant execute on function auth.jwt() to anon, authenticated, service_role;
  end if;

  if not exists (select 1 from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                 where n.nspname = 'auth' and p.proname = 'uid' and p.pronargs = 0) then
    create function auth.uid() returns uuid
      language sql stable
      set search_path = ''
    as $f$
      select nullif(nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
                    '')::uuid
    $f$;
    comment on function auth.uid() is 'The current user: the sub claim of request.jwt.claims as uuid, or NULL.';
    grant execute on function auth.uid() to anon, authenticated, service_role;
  end if;
end
$$;

-- Home of walcast's policy helpers (20261122000300_rls_policies.sql). Not exposed through any
-- API schema list; only the roles that evaluate policies may use it.
create schema if not exists walcast;
comment on schema walcast is 'walcast: SECURITY DEFINER helpers used by the row-level security policies.';
revoke all on schema walcast from public;
grant usage on schema walcast to authenticated, service_role;

commit;
