-- 20261202000200_walcast_writes.sql
--
-- What walcast itself writes to the platform database, and nothing more: walcast's own role
-- walcast_replicator (20261122000400_replication.sql) may INSERT into public.audit_log (the
-- audit writer, src/pipeline/auditlog.c: joins, refused joins, leaves, stats API reads) and
-- into public.sync_health (walcast's own ingestion health, one row per org per tick).
--
-- Why here and why so narrow: walcast must never change what the application's roles may do
-- to their own database, so no grant or policy of anon, authenticated or service_role is
-- touched. walcast_replicator gets INSERT only — no UPDATE, DELETE or TRUNCATE — on exactly
-- these two tables, and, because row-level security is enabled (and forced) on them and the
-- role does not bypass it, one INSERT policy per table that lets it write rows of any org (it
-- writes on behalf of walcast, for every org it serves). The identity columns need no sequence
-- privilege (PostgreSQL does not check one for GENERATED ... AS IDENTITY). Reading the org list
-- for sync_health's INSERT ... SELECT uses the SELECT it already has on public.orgs.
--
-- Rollback:
--   drop policy if exists audit_log_insert_walcast on public.audit_log;
--   drop policy if exists sync_health_insert_walcast on public.sync_health;
--   revoke insert on public.audit_log, public.sync_health from walcast_replicator;

begin;
-- Quiet the "already exists, skipping" notices of a rerun; warnings and errors still show.
set local client_min_messages = warning;

grant insert on public.audit_log, public.sync_health to walcast_replicator;

drop policy if exists audit_log_insert_walcast on public.audit_log;
create policy audit_log_insert_walcast on public.audit_log for insert to walcast_replicator
  with check (true);

drop policy if exists sync_health_insert_walcast on public.sync_health;
create policy sync_health_insert_walcast on public.sync_health for insert to walcast_replicator
  with check (source = 'walcast');

commit;
