-- 20261122000300_rls_policies.sql
--
-- The platform's privacy model as row-level security policies for the `authenticated` role,
-- plus the helper functions they call (schema `walcast`). walcast mirrors exactly these rules in
-- its own policy engine; its integration tests use these policies as the oracle.
--
-- Ranks: owner 5 > admin 4 > analyst 3 > member 2 > viewer 1; 0 means "not a member".
-- A user (auth.uid(), the JWT sub) has a rank per org, from org_roles only.
--
--   table          select                                        insert / update / delete
--   orgs           member                                        update name: owner
--   org_roles      member (the whole roster of the org)          admin+, for roles up to their own
--   contacts       member, and rule rank <= user rank            admin+ (visible contacts only)
--   privacy_rules  admin+                                        admin+, for rules up to their own rank
--   events         member, and (handling user                    insert: member+; update/delete:
--                  or rule rank <= user rank)                    admin+ (visible events only)
--   audit_log      admin+                                        service_role only
--   sync_health    admin+                                        service_role only
--
-- A contact without a rule, and an event without a contact, have rule rank 0: visible to every
-- member. The handling user of an event (events.user_id) sees it whatever the rule, but only
-- while a member of the event's org: removal from an org removes everything of that org.
-- service_role bypasses RLS (BYPASSRLS); walcast_replicator gets its read-all policies in
-- 20261122000400_replication.sql.
--
-- Every policy has the same shape, `walcast.user_rank(<org column>) >= walcast.role_rank('<role>')`
-- plus a privacy-rule term, so that a later generator (`walcast policy sql`) can emit them.
--
-- Rollback:
--   drop policy if exists <each policy below> on <its table>;
--   alter table <each table> no force row level security;
--   drop function if exists walcast.contact_min_rank(uuid), walcast.user_rank(uuid),
--     walcast.role_rank(text);

begin;
-- Quiet the "already exists, skipping" notices of a rerun; warnings and errors still show.
set local client_min_messages = warning;

-- role_rank: a pure mapping, IMMUTABLE so that role_rank('admin') in a policy folds to a
-- constant at plan time. Unknown or NULL roles rank 0.
create or replace function walcast.role_rank(role text) returns integer
  language sql immutable parallel safe
  set search_path = ''
as $$
  select case role
    when 'owner'   then 5
    when 'admin'   then 4
    when 'analyst' then 3
    when 'member'  then 2
    when 'viewer'  then 1
    else 0
  end
$$;
comment on function walcast.role_rank(text) is
  'Rank of an org role: owner 5, admin 4, analyst 3, member 2, viewer 1, anything else 0.';

-- user_rank: the current user's rank in an org, 0 when not a member (or no user at all).
-- SECURITY DEFINER so that it reads org_roles without applying org_roles' own policy, which
-- calls this function (that would recurse forever). Its owner must bypass RLS on org_roles:
-- the table owner does, unless RLS is FORCEd, which is why FORCE is conditional below.
create or replace function walcast.user_rank(org uuid) returns integer
  language sql stable security definer
  set search_path = ''
as $$
  select coalesce(max(walcast.role_rank(r.role)), 0)
  from public.org_roles r
  where r.org_id = org
    and r.user_id = auth.uid()
$$;
comment on function walcast.user_rank(uuid) is
  'Rank of auth.uid() in the org (from org_roles), 0 when not a member or no user.';

-- contact_min_rank: rank of the contact's privacy rule, 0 when it has none or contact is NULL.
-- SECURITY DEFINER because only admins may read privacy_rules directly.
create or replace function walcast.contact_min_rank(contact uuid) returns integer
  language sql stable security definer
  set search_path = ''
as $$
  select coalesce(max(walcast.role_rank(p.min_role)), 0)
  from public.privacy_rules p
  where p.contact_id = contact
$$;
comment on function walcast.contact_min_rank(uuid) is
  'Rank of the contact''s privacy rule min_role, 0 when the contact has no rule or is NULL.';

revoke all on function walcast.role_rank(text), walcast.user_rank(uuid),
  walcast.contact_min_rank(uuid) from public, anon;
grant execute on function walcast.role_rank(text), walcast.user_rank(uuid),
  walcast.contact_min_rank(uuid) to authenticated, service_role;

-- Policies. Each is dropped and recreated so that this file can be applied again.

-- orgs
drop policy if exists orgs_select on public.orgs;
create policy orgs_select on public.orgs for select to authenticated
  using (walcast.user_rank(id) >= walcast.role_rank('viewer'));

drop policy if exists orgs_update on public.orgs;
create policy orgs_update on public.orgs for update to authenticated
  using (walcast.user_rank(id) >= walcast.role_rank('owner'))
  with check (walcast.user_rank(id) >= walcast.role_rank('owner'));

-- org_roles: every member sees the roster; admins and owners manage it, but never grant or
-- touch a role above their own (an admin cannot make an owner or remove one).
drop policy if exists org_roles_select on public.org_roles;
create policy org_roles_select on public.org_roles for select to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('viewer'));

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
drop policy if exists contacts_select on public.contacts;
create policy contacts_select on public.contacts for select to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('viewer')
         and walcast.contact_min_rank(id) <= walcast.user_rank(org_id));

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
drop policy if exists privacy_rules_select on public.privacy_rules;
create policy privacy_rules_select on public.privacy_rules for select to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin'));

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
drop policy if exists events_select on public.events;
create policy events_select on public.events for select to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('viewer')
         and (user_id = (select auth.uid())
              or walcast.contact_min_rank(contact_id) <= walcast.user_rank(org_id)));

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

-- audit_log, sync_health: read by admins and owners; written by service_role only.
drop policy if exists audit_log_select on public.audit_log;
create policy audit_log_select on public.audit_log for select to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin'));

drop policy if exists sync_health_select on public.sync_health;
create policy sync_health_select on public.sync_health for select to authenticated
  using (walcast.user_rank(org_id) >= walcast.role_rank('admin'));

-- FORCE ROW LEVEL SECURITY makes the policies apply to the table owner too (a migration or
-- backend connecting as the owner no longer sees everything by accident). The helpers above run
-- as their owner (the role applying this file) and must still read org_roles and privacy_rules
-- unfiltered, which holds only if that role is a superuser or has BYPASSRLS. So: force when it
-- is safe, otherwise warn and leave RLS enabled but not forced.
do $$
declare
  t text;
  safe boolean;
begin
  select r.rolsuper or r.rolbypassrls into safe
  from pg_catalog.pg_roles r where r.rolname = current_user;
  if not safe then
    raise warning 'walcast: % neither is superuser nor has BYPASSRLS; row-level security is '
      'enabled but not forced (forcing it would make the policy helpers recurse)', current_user;
    return;
  end if;
  foreach t in array array['orgs', 'org_roles', 'contacts', 'privacy_rules', 'events',
                           'audit_log', 'sync_health'] loop
    execute pg_catalog.format('alter table public.%I force row level security', t);
  end loop;
end
$$;

commit;
