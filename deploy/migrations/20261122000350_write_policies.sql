-- 20261122000350_write_policies.sql
--
-- The platform's write rules as row-level security policies for the `authenticated` role:
-- INSERT, UPDATE and DELETE. Hand-written (walcast streams what is read; only the read side is
-- generated from deploy/policy.ini, in 20261122000300_rls_policies.sql, whose helper functions
-- walcast.role_rank, walcast.user_rank and walcast.contact_min_rank these policies call).
--
--   table          insert / update / delete
--   orgs           update name: owner
--   org_roles      admin+, for roles up to their own
--   contacts       admin+ (visible contacts only)
--   privacy_rules  admin+, for rules up to their own rank
--   events         insert: member+; update/delete: admin+ (visible events only)
--   audit_log      service_role only (no policy: authenticated has no write privilege)
--   sync_health    service_role only (no policy: authenticated has no write privilege)
--
-- Rollback:
--   drop policy if exists orgs_update on public.orgs;
--   drop policy if exists org_roles_insert on public.org_roles;
--   drop policy if exists org_roles_update on public.org_roles;
--   drop policy if exists org_roles_delete on public.org_roles;
--   drop policy if exists contacts_insert on public.contacts;
--   drop policy if exists contacts_update on public.contacts;
--   drop policy if exists contacts_delete on public.contacts;
--   drop policy if exists privacy_rules_insert on public.privacy_rules;
--   drop policy if exists privacy_rules_update on public.privacy_rules;
--   drop policy if exists privacy_rules_delete on public.privacy_rules;
--   drop policy if exists events_insert on public.events;
--   drop policy if exists events_update on public.events;
--   drop policy if exists events_delete on public.events;

begin;
-- Quiet the "already exists, skipping" notices of a rerun; warnings and errors still show.
set local client_min_messages = warning;

-- Policies. Each is dropped and recreated so that this file can be applied again.

-- orgs
drop policy if exists orgs_update on public.orgs;
create policy orgs_update on public.orgs for update to authenticated
  using (walcast.user_rank(id) >= walcast.role_rank('owner'))
  with check (walcast.user_rank(id) >= walcast.role_rank('owner'));

-- org_roles: admins and owners manage the roster, but never grant or touch a role above their
-- own (an admin cannot make an owner or remove one).
drop policy if exists org_roles_insert on public.org_roles;
create policy org_roles_insert on public.org_roles for insert to authenticated
  with check (walcast.user_rank(org_id) >= walcast.role_rank('admin')
              and walcast.role_rank(role) <= walcast.user_rank(org_id));

drop policy if exists org_roles_update on public.org_roles;
create policy org_roles_update on public.org_roles for update to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin')
         and walcast.role_rank(role) <= walcast.user_rank(org_id))
  with check (walcast.user_rank(org_id) >= walcast.role_rank('admin')
              and walcast.role_rank(role) <= walcast.user_rank(org_id));

drop policy if exists org_roles_delete on public.org_roles;
create policy org_roles_delete on public.org_roles for delete to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin')
         and walcast.role_rank(role) <= walcast.user_rank(org_id));

-- contacts
drop policy if exists contacts_insert on public.contacts;
create policy contacts_insert on public.contacts for insert to authenticated
  with check (walcast.user_rank(org_id) >= walcast.role_rank('admin'));

drop policy if exists contacts_update on public.contacts;
create policy contacts_update on public.contacts for update to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin')
         and walcast.contact_min_rank(id) <= walcast.user_rank(org_id))
  with check (walcast.user_rank(org_id) >= walcast.role_rank('admin'));

drop policy if exists contacts_delete on public.contacts;
create policy contacts_delete on public.contacts for delete to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin')
         and walcast.contact_min_rank(id) <= walcast.user_rank(org_id));

-- privacy_rules: admins and owners; nobody creates, changes or removes a rule ranked above
-- themselves (an admin cannot lift an owner-only rule).
drop policy if exists privacy_rules_insert on public.privacy_rules;
create policy privacy_rules_insert on public.privacy_rules for insert to authenticated
  with check (walcast.user_rank(org_id) >= walcast.role_rank('admin')
              and walcast.role_rank(min_role) <= walcast.user_rank(org_id));

drop policy if exists privacy_rules_update on public.privacy_rules;
create policy privacy_rules_update on public.privacy_rules for update to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin')
         and walcast.role_rank(min_role) <= walcast.user_rank(org_id))
  with check (walcast.user_rank(org_id) >= walcast.role_rank('admin')
              and walcast.role_rank(min_role) <= walcast.user_rank(org_id));

drop policy if exists privacy_rules_delete on public.privacy_rules;
create policy privacy_rules_delete on public.privacy_rules for delete to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin')
         and walcast.role_rank(min_role) <= walcast.user_rank(org_id));

-- events. (select auth.uid()) is evaluated once per query, not once per row.
drop policy if exists events_insert on public.events;
create policy events_insert on public.events for insert to authenticated
  with check (walcast.user_rank(org_id) >= walcast.role_rank('member'));

drop policy if exists events_update on public.events;
create policy events_update on public.events for update to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin')
         and (user_id = (select auth.uid())
              or walcast.contact_min_rank(contact_id) <= walcast.user_rank(org_id)))
  with check (walcast.user_rank(org_id) >= walcast.role_rank('admin'));

drop policy if exists events_delete on public.events;
create policy events_delete on public.events for delete to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin')
         and (user_id = (select auth.uid())
              or walcast.contact_min_rank(contact_id) <= walcast.user_rank(org_id)));

commit;
