-- Seed for the RLS-equivalence test: 3 orgs, one user of every role in each, an extra member,
-- two users in two orgs, an outsider; contacts with and without privacy rules. :seed is set by
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
insert into difftest.viewers select uid from u;
insert into public.contacts (id, org_id, name, phone)
  select md5(:'seed' || 'contact' || g)::uuid, md5(:'seed' || 'org' || (1 + g % 3))::uuid, 'contact ' || g,
         case when g % 7 = 0 then null else '+1555' || lpad((g * 7919 % 10000000)::text, 7, '0') end
    from generate_series(1, 18) g;
insert into public.privacy_rules (org_id, contact_id, min_role)
  select org_id, id, (array['member', 'analyst', 'admin', 'owner'])[1 + (abs(hashtext(id::text)) % 4)]
    from public.contacts where abs(hashtext(id::text)) % 3 = 0;
