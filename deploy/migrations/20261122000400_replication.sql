-- 20261122000400_replication.sql
--
-- What walcast needs to read the platform: the least-privilege role walcast_replicator (LOGIN
-- REPLICATION, not a superuser, no BYPASSRLS) and the publication `walcast` over the seven
-- platform tables, for the pgoutput decoder (wal2json ignores publications).
--
-- walcast_replicator may: open a replication connection and create/use logical slots
-- (REPLICATION), and SELECT every row of the platform tables to load the policy state and to
-- backfill aggregates. It may not write anything. Because RLS is enabled on those tables and
-- the role does not bypass it, it gets one read-all SELECT policy per table instead of the
-- BYPASSRLS attribute (which only a superuser may grant, and which would reach every table of
-- the database, not just these seven).
--
-- The role is created without a password: set one (ALTER ROLE walcast_replicator PASSWORD ...)
-- or allow it in pg_hba.conf. Creating a REPLICATION role needs a superuser on PostgreSQL 15;
-- where the migrating role is not one, create the role first as a superuser and rerun.
--
-- Rollback:
--   drop publication if exists walcast;
--   drop policy if exists <table>_select_replicator on public.<table>;   -- each of the seven
--   revoke all on public.orgs, public.org_roles, public.contacts, public.privacy_rules,
--     public.events, public.audit_log, public.sync_health from walcast_replicator;
--   revoke usage on schema public from walcast_replicator;
--   drop role if exists walcast_replicator;   -- after dropping its replication slots

begin;
-- Quiet the "already exists, skipping" notices of a rerun; warnings and errors still show.
set local client_min_messages = warning;

do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'walcast_replicator') then
    begin
      create role walcast_replicator login replication nosuperuser nocreatedb nocreaterole
        noinherit nobypassrls;
    exception when insufficient_privilege then
      raise exception 'walcast: cannot create role walcast_replicator as %', current_user
        using hint = 'As a superuser run: CREATE ROLE walcast_replicator LOGIN REPLICATION; '
                     'then apply this migration again.';
    end;
  end if;
end
$$;
comment on role walcast_replicator is
  'walcast: logical replication and read-only access to the platform tables.';

do $$
begin
  -- Usually already granted to PUBLIC; granting again as a non-owner would only warn.
  if not pg_catalog.has_schema_privilege('walcast_replicator', 'public', 'usage') then
    grant usage on schema public to walcast_replicator;
  end if;
end
$$;
grant select on public.orgs, public.org_roles, public.contacts, public.privacy_rules,
  public.events, public.audit_log, public.sync_health to walcast_replicator;

do $$
declare
  t text;
begin
  foreach t in array array['orgs', 'org_roles', 'contacts', 'privacy_rules', 'events',
                           'audit_log', 'sync_health'] loop
    execute pg_catalog.format('drop policy if exists %I on public.%I', t || '_select_replicator', t);
    execute pg_catalog.format(
      'create policy %I on public.%I for select to walcast_replicator using (true)',
      t || '_select_replicator', t);
  end loop;
end
$$;

-- The publication: created when missing; when it exists (e.g. an operator created it, or an
-- earlier version published fewer tables) the missing platform tables are added and nothing
-- else is touched.
do $$
declare
  t text;
begin
  if not exists (select 1 from pg_catalog.pg_publication where pubname = 'walcast') then
    create publication walcast for table public.orgs, public.org_roles, public.contacts,
      public.privacy_rules, public.events, public.audit_log, public.sync_health;
    return;
  end if;
  foreach t in array array['orgs', 'org_roles', 'contacts', 'privacy_rules', 'events',
                           'audit_log', 'sync_health'] loop
    if not exists (select 1 from pg_catalog.pg_publication_tables
                   where pubname = 'walcast' and schemaname = 'public' and tablename = t) then
      execute pg_catalog.format('alter publication walcast add table public.%I', t);
    end if;
  end loop;
end
$$;

commit;
