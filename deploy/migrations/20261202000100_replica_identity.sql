-- 20261202000100_replica_identity.sql
--
-- 1. Replica identities that carry what the privacy policy needs to judge an old row.
--
-- walcast sends a DELETE (and an UPDATE's old row) only to the subscribers who could see the
-- row, and decides that from the old row as the WAL carries it: only the replica identity's
-- columns. Each governed table's identity must therefore carry every column its rules read
-- (deploy/policy.ini): the org column, the read rule's columns (uid comparisons, privacy
-- subjects), the mask / decryption conditions' columns and the encryption context columns:
--
--   table          needs                               identity
--   orgs           id                                  DEFAULT (primary key id): enough
--   org_roles      org_id                              FULL (since 20261122000200)
--   contacts       org_id, id                          FULL (since 20261122000200)
--   privacy_rules  org_id                              FULL (since 20261122000200)
--   events         org_id, id, contact_id, user_id     FULL (since 20261122000200; the
--                                                      aggregates also need old values)
--   audit_log      org_id                              was DEFAULT (id only): now FULL
--   sync_health    org_id                              was DEFAULT (id only): now FULL
--
-- With DEFAULT, the WAL carried only `id` for deleted audit_log and sync_health rows, so no
-- admin ever received those deletes. FULL rather than a unique index on (id, org_id) USING
-- INDEX: both tables are append-mostly (audit entries, health samples), so FULL costs WAL only
-- on the rare UPDATE/DELETE (retention), while an extra unique index would be maintained on
-- every insert; FULL also gives every UPDATE its old row (an index identity only when a key
-- column changes), and stays right if the policy later reads another column (say
-- `actor_id = uid`). walcast checks the identities against the policy at start (`walcast tail
-- --as/--jwt`) and refuses to run when one falls short, naming the table and the fix.
--
-- 2. sync_health.lag_s is finite or NULL. A replication lag is never NaN or infinite, and
-- wal2json would deliver those as JSON null, indistinguishable from "unknown" (NULL, which
-- stays allowed). Existing non-finite values are set to NULL first (they meant "unknown");
-- the count is reported as a WARNING.
--
-- Re-runnable. Rollback:
--   alter table public.sync_health drop constraint if exists sync_health_lag_s_finite;
--   alter table public.audit_log   replica identity default;   -- deletes then stop reaching
--   alter table public.sync_health replica identity default;   -- admins, and walcast tail --as
--                                                              -- refuses to start

begin;
set local client_min_messages = warning;

alter table public.audit_log   replica identity full;
alter table public.sync_health replica identity full;

do $$
declare
  n bigint;
begin
  if not exists (select 1 from pg_catalog.pg_constraint
                 where conrelid = 'public.sync_health'::regclass
                   and conname = 'sync_health_lag_s_finite') then
    update public.sync_health set lag_s = null
     where not (lag_s > '-Infinity'::numeric and lag_s < 'Infinity'::numeric);
    get diagnostics n = row_count;
    if n > 0 then
      raise warning 'walcast: % sync_health rows had a non-finite lag_s; set to NULL (unknown)', n;
    end if;
    -- NaN sorts above every number (Infinity included), so this refuses NaN and ±Infinity;
    -- NULL passes a CHECK.
    alter table public.sync_health add constraint sync_health_lag_s_finite
      check (lag_s > '-Infinity'::numeric and lag_s < 'Infinity'::numeric);
  end if;
end
$$;
comment on constraint sync_health_lag_s_finite on public.sync_health is
  'walcast: a lag is a finite number of seconds, or NULL when unknown (wal2json turns NaN/Infinity into null).';

commit;
