-- Seed for the RLS-equivalence test: 3 orgs, one user of every role in each, an extra member,
-- two users in two orgs, an outsider; contacts with and without privacy rules; an audit log and
-- sync health rows; the viewers (users and tokens). :seed is set by
-- the caller; every id derives from it, so a failing seed replays exactly.
select setseed(:seed);
create temporary table u (n int, uid uuid);
insert into u select g, md5(:'seed' || 'user' || g)::uuid from generate_series(1, 19) g;
insert into public.orgs (id, name)
  select md5(:'seed' || 'org' || g)::uuid, 'org ' || g from generate_series(1, 3) g;
-- users 1..15: org (n-1)/5+1, role by n % 5; 16..18: members of two orgs; 19: outsider
insert into public.org_roles (org_id, user_id, role)
  select md5(:'seed' || 'org' || ((n - 1) / 5 + 1))::uuid, uid,
         (array['viewer', 'member', 'analyst', 'admin', 'owner'])[1 + (n % 5)]
    from u where n <= 15;
insert into public.org_roles (org_id, user_id, role)
  select md5(:'seed' || 'org' || o)::uuid, uid, (array['viewer', 'member', 'analyst', 'admin'])[1 + ((n + o) % 4)]
    from u, generate_series(1, 2) o where n between 16 and 18;
insert into difftest.viewers select uid::text, uid, 'authenticated' from u;
-- Token viewers (walcast tail --jwt): the JWT path for user 1; anon and a role the database does
-- not know, each with the sub of a member (user 16: two orgs; user 4: an owner), which must see
-- nothing; service_role, which sees every row unmasked.
insert into difftest.viewers
  select 'jwt-' || uid, uid, 'authenticated' from u where n = 1
  union all select 'anon-' || uid, uid, 'anon' from u where n = 16
  union all select 'analytics_bot-' || uid, uid, 'analytics_bot' from u where n = 4
  union all select 'service_role', null, 'service_role';
insert into public.contacts (id, org_id, name, phone)
  select md5(:'seed' || 'contact' || g)::uuid, md5(:'seed' || 'org' || (1 + g % 3))::uuid, 'contact ' || g,
         case when g % 7 = 0 then null else '+1555' || lpad((g * 7919 % 10000000)::text, 7, '0') end
    from generate_series(1, 18) g;
insert into public.privacy_rules (org_id, contact_id, min_role)
  select org_id, id, (array['member', 'analyst', 'admin', 'owner'])[1 + (abs(hashtext(id::text)) % 4)]
    from public.contacts where abs(hashtext(id::text)) % 3 = 0;
insert into public.audit_log (org_id, actor_id, action, target_table, detail)
  select md5(:'seed' || 'org' || (1 + g % 3))::uuid, md5(:'seed' || 'user' || (1 + g % 19))::uuid, 'seed', 'orgs',
         jsonb_build_object('g', g)
    from generate_series(1, 9) g;
insert into public.sync_health (org_id, source, status, lag_s)
  select md5(:'seed' || 'org' || (1 + g % 3))::uuid, 'twilio', 'ok', g * 1.5 from generate_series(1, 6) g;
-- The seed's own changes are the starting state, not part of the workload.
truncate difftest.changes;
