-- 20261122000200_platform_tables.sql
--
-- Creates the Call/SMS platform tables (orgs, org_roles, contacts, privacy_rules, events,
-- audit_log, sync_health), their indexes (every foreign key is covered by an index whose leading
-- columns are the key), replica identities, table privileges, and turns row-level security on
-- for every table. With RLS on and no policy yet, `authenticated` sees nothing: the policies
-- come in 20261122000300_rls_policies.sql, so the schema is never open in between.
--
-- Users are plain uuids (the JWT `sub`): there is no users table here, so org_roles.user_id and
-- events.user_id carry no foreign key (on Supabase they are auth.users ids).
--
-- Rollback:
--   drop table if exists public.sync_health, public.audit_log, public.events,
--     public.privacy_rules, public.contacts, public.org_roles, public.orgs cascade;
--   drop function if exists walcast.touch_updated_at();

begin;
-- Quiet the "already exists, skipping" notices of a rerun; warnings and errors still show.
set local client_min_messages = warning;

create table if not exists public.orgs (
  id         uuid primary key default gen_random_uuid(),
  name       text not null,
  created_at timestamptz not null default now()
);

-- A user's role inside an org. The role comes from here, never from the token, so a demotion
-- takes effect at the commit that made it.
create table if not exists public.org_roles (
  org_id     uuid not null references public.orgs (id) on delete cascade,
  user_id    uuid not null,
  role       text not null check (role in ('owner', 'admin', 'analyst', 'member', 'viewer')),
  created_at timestamptz not null default now(),
  primary key (org_id, user_id)
);
create index if not exists org_roles_user_id_idx on public.org_roles (user_id);

create table if not exists public.contacts (
  id         uuid primary key default gen_random_uuid(),
  org_id     uuid not null references public.orgs (id) on delete cascade,
  name       text not null,
  phone      text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- Target of the composite foreign keys below, which keep a contact's privacy rule and its
  -- events in the contact's own org.
  constraint contacts_id_org_id_key unique (id, org_id)
);
create index if not exists contacts_org_id_idx on public.contacts (org_id);

-- At most one rule per contact: the contact (and every event about it) is hidden from users
-- whose role ranks below min_role.
create table if not exists public.privacy_rules (
  id         uuid primary key default gen_random_uuid(),
  org_id     uuid not null references public.orgs (id) on delete cascade,
  contact_id uuid not null,
  min_role   text not null check (min_role in ('owner', 'admin', 'analyst', 'member', 'viewer')),
  created_at timestamptz not null default now(),
  constraint privacy_rules_contact_id_key unique (contact_id),
  constraint privacy_rules_contact_fkey foreign key (contact_id, org_id)
    references public.contacts (id, org_id) on delete cascade
);
create index if not exists privacy_rules_org_id_idx on public.privacy_rules (org_id);
-- The foreign key (contact_id, org_id) is served by the unique index on contact_id.

-- Calls and SMS. contact_id NULL means an unknown number (no privacy rule applies); user_id is
-- the handling user, NULL when nobody handled it. A contact that still has events cannot be
-- deleted (NO ACTION): detaching the events would silently drop the contact's privacy rule
-- from them and widen who sees them.
create table if not exists public.events (
  id          uuid primary key default gen_random_uuid(),
  org_id      uuid not null references public.orgs (id) on delete cascade,
  contact_id  uuid,
  user_id     uuid,
  kind        text not null check (kind in ('call', 'sms')),
  direction   text not null check (direction in ('inbound', 'outbound')),
  status      text not null,
  started_at  timestamptz not null default now(),
  duration_s  integer check (duration_s >= 0),
  from_number text,
  to_number   text,
  body        bytea, -- AES-256-GCM ciphertext written by walcast; NULL when there is none
  created_at  timestamptz not null default now(),
  constraint events_contact_fkey foreign key (contact_id, org_id)
    references public.contacts (id, org_id)
);
create index if not exists events_org_id_idx on public.events (org_id);
create index if not exists events_contact_id_idx on public.events (contact_id, org_id);
create index if not exists events_user_id_idx on public.events (user_id);
create index if not exists events_org_id_started_at_idx on public.events (org_id, started_at);

create table if not exists public.audit_log (
  id           bigint generated always as identity primary key,
  org_id       uuid not null references public.orgs (id) on delete cascade,
  actor_id     uuid,
  action       text not null,
  target_table text,
  target_id    text,
  detail       jsonb not null default '{}'::jsonb,
  created_at   timestamptz not null default now()
);
create index if not exists audit_log_org_id_created_at_idx on public.audit_log (org_id, created_at);

create table if not exists public.sync_health (
  id         bigint generated always as identity primary key,
  org_id     uuid not null references public.orgs (id) on delete cascade,
  source     text not null,
  status     text not null,
  lag_s      numeric,
  checked_at timestamptz not null default now()
);
create index if not exists sync_health_org_id_checked_at_idx on public.sync_health (org_id, checked_at);

-- contacts.updated_at follows every update.
create or replace function walcast.touch_updated_at() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end
$$;
revoke all on function walcast.touch_updated_at() from public;
create or replace trigger contacts_touch_updated_at
  before update on public.contacts
  for each row execute function walcast.touch_updated_at();

-- Replica identity. walcast judges a DELETE by whether the old row was visible to a subscriber,
-- and an UPDATE by who saw the row before and who sees it after. For these four tables the
-- answer depends on columns other than the primary key (org_id, contact_id, user_id, role,
-- min_role), so the WAL must carry the whole old row: FULL. orgs, audit_log and sync_health are
-- judged by columns that never change (id, org_id), so the primary key (DEFAULT) is enough and
-- keeps their WAL small.
alter table public.events        replica identity full;
alter table public.contacts      replica identity full;
alter table public.org_roles     replica identity full;
alter table public.privacy_rules replica identity full;
alter table public.orgs          replica identity default;
alter table public.audit_log     replica identity default;
alter table public.sync_health   replica identity default;

-- Row-level security on every table; policies in the next migration. Until then nobody but the
-- owner and BYPASSRLS roles sees a row.
alter table public.orgs          enable row level security;
alter table public.org_roles     enable row level security;
alter table public.contacts      enable row level security;
alter table public.privacy_rules enable row level security;
alter table public.events        enable row level security;
alter table public.audit_log     enable row level security;
alter table public.sync_health   enable row level security;

-- Privileges. Start from nothing (Supabase's default privileges grant everything in `public` to
-- anon, authenticated and service_role), then grant what each role needs; RLS narrows rows.
--   anon:          nothing.
--   authenticated: read everything (RLS filters); write what the write policies allow.
--   service_role:  everything (it bypasses RLS).
revoke all on public.orgs, public.org_roles, public.contacts, public.privacy_rules,
  public.events, public.audit_log, public.sync_health from public, anon, authenticated;
grant select on public.orgs, public.org_roles, public.contacts, public.privacy_rules,
  public.events, public.audit_log, public.sync_health to authenticated;
grant update (name) on public.orgs to authenticated;
grant insert, update, delete on public.org_roles, public.contacts, public.privacy_rules,
  public.events to authenticated;
grant all on public.orgs, public.org_roles, public.contacts, public.privacy_rules,
  public.events, public.audit_log, public.sync_health to service_role;
revoke all on sequence public.audit_log_id_seq, public.sync_health_id_seq from public, anon, authenticated;
grant usage, select on sequence public.audit_log_id_seq, public.sync_health_id_seq to service_role;

commit;
