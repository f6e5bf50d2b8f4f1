-- The RLS-equivalence workload: a seeded random sequence of single-transaction steps over the
-- platform tables, each recorded with the oracle: what PostgreSQL itself shows every viewer,
-- through RLS and the masking views, as that viewer (set role authenticated + request.jwt.claims).
-- INSERT/UPDATE steps are observed after their commit, DELETE steps before it (DESIGN.md).
create schema if not exists difftest;
create table difftest.viewers (uid uuid primary key);
create table difftest.bodies (id uuid primary key, body bytea not null, plain text, bad boolean not null);
create table difftest.oracle (
  step int not null, xid bigint not null, tbl text not null, action text not null,
  viewer uuid not null, expected jsonb  -- NULL: the viewer must not receive this change
);

-- One row of a masking view as text values, as the given viewer; NULL when invisible.
create or replace function difftest.observe(tbl text, cond text, viewer uuid) returns jsonb
language plpgsql as $$
declare
  cols text;
  result jsonb;
begin
  select string_agg(format('%L, v.%I::text', column_name, column_name), ', ' order by ordinal_position)
    into cols
    from information_schema.columns
   where table_schema = 'walcast' and table_name = tbl || '_masked';
  perform set_config('request.jwt.claims', json_build_object('sub', viewer, 'role', 'authenticated')::text, true);
  set local role authenticated;
  execute format('select jsonb_build_object(%s) from walcast.%I v where %s', cols, tbl || '_masked', cond)
    into result;
  reset role;
  -- The body arrives decrypted (or null with a marker) from walcast: map ciphertext to plaintext.
  if tbl = 'events' and result is not null and result->>'body' is not null then
    select case when b.bad then jsonb_set(result, '{body}', 'null') || '{"__body_error": "bad"}'
                else jsonb_set(result, '{body}', to_jsonb(b.plain)) end
      into result
      from difftest.bodies b where b.body = decode(substr(result->>'body', 3), 'hex');
  end if;
  return result;
end $$;

create or replace procedure difftest.record(step int, xid bigint, tbl text, action text, cond text)
language plpgsql as $$
declare v uuid;
begin
  for v in select uid from difftest.viewers loop
    insert into difftest.oracle values (step, xid, tbl, action, v, difftest.observe(tbl, cond, v));
  end loop;
end $$;

create or replace procedure difftest.run(seed double precision, steps int)
language plpgsql as $$
declare
  i int; r double precision; x bigint; cond text; tbl text; act text;
  o uuid; o2 uuid; c uuid; u uuid; e uuid; b record;
  roles text[] := array['viewer', 'member', 'analyst', 'admin', 'owner'];
begin
  perform setseed(seed);
  for i in 1..steps loop
    r := random();
    cond := null;
    if r < 0.30 then                                   -- insert an event (body from the pool)
      select id, body into b from difftest.bodies
       where id not in (select id from public.events) order by id limit 1 offset (random() * 5)::int;
      select id into o from public.orgs order by random() limit 1;
      select id into c from public.contacts where org_id = o and random() < 0.8 order by random() limit 1;
      select user_id into u from public.org_roles where org_id = o and random() < 0.8 order by random() limit 1;
      insert into public.events (id, org_id, contact_id, user_id, kind, direction, status, duration_s,
                                 from_number, to_number, body)
      values (b.id, o, c, u, (array['call', 'sms'])[1 + (random() * 1)::int],
              (array['inbound', 'outbound'])[1 + (random() * 1)::int], 'new',
              case when random() < 0.3 then null else (random() * 600)::int end,
              '+1555' || lpad((random() * 9999999)::int::text, 7, '0'),
              case when random() < 0.1 then null else '+1555' || lpad((random() * 9999999)::int::text, 7, '0') end,
              case when random() < 0.15 then null else b.body end);
      tbl := 'events'; act := 'insert'; cond := format('id = %L', b.id);
    elsif r < 0.48 then                                -- update an event: status, contact, handler or org
      select id, org_id into e, o from public.events order by random() limit 1;
      if e is null then continue; end if;
      r := random();
      if r < 0.3 then
        update public.events set status = (array['answered', 'missed', 'delivered'])[1 + (random() * 2)::int] where id = e;
      elsif r < 0.6 then
        select id into c from public.contacts where org_id = o order by random() limit 1;
        update public.events set contact_id = case when random() < 0.2 then null else c end where id = e;
      elsif r < 0.85 then
        select user_id into u from public.org_roles where org_id = o order by random() limit 1;
        update public.events set user_id = case when random() < 0.2 then null else u end where id = e;
      else
        select id into o2 from public.orgs where id <> o order by random() limit 1;
        update public.events set org_id = o2, contact_id = null where id = e;
      end if;
      tbl := 'events'; act := 'update'; cond := format('id = %L', e);
    elsif r < 0.56 then                                -- delete an event
      select id into e from public.events order by random() limit 1;
      if e is null then continue; end if;
      tbl := 'events'; act := 'delete'; cond := format('id = %L', e);
      call difftest.record(i, txid_current(), tbl, act, cond);
      delete from public.events where id = e;
      commit;
      continue;
    elsif r < 0.68 then                                -- a role change (promotion or demotion)
      select org_id, user_id into o, u from public.org_roles order by random() limit 1;
      update public.org_roles set role = roles[1 + (random() * 4)::int] where org_id = o and user_id = u;
      tbl := 'org_roles'; act := 'update'; cond := format('org_id = %L and user_id = %L', o, u);
    elsif r < 0.73 then                                -- a member removed
      select org_id, user_id into o, u from public.org_roles order by random() limit 1;
      tbl := 'org_roles'; act := 'delete'; cond := format('org_id = %L and user_id = %L', o, u);
      call difftest.record(i, txid_current(), tbl, act, cond);
      delete from public.org_roles where org_id = o and user_id = u;
      commit;
      continue;
    elsif r < 0.79 then                                -- a viewer (back) into an org
      select id into o from public.orgs order by random() limit 1;
      select uid into u from difftest.viewers v
       where not exists (select 1 from public.org_roles m where m.org_id = o and m.user_id = v.uid)
       order by random() limit 1;
      if u is null then continue; end if;
      insert into public.org_roles (org_id, user_id, role) values (o, u, roles[1 + (random() * 4)::int]);
      tbl := 'org_roles'; act := 'insert'; cond := format('org_id = %L and user_id = %L', o, u);
    elsif r < 0.90 then                                -- a privacy rule added, changed or removed
      select id, org_id into c, o from public.contacts order by random() limit 1;
      if exists (select 1 from public.privacy_rules where contact_id = c) then
        if random() < 0.5 then
          select id into e from public.privacy_rules where contact_id = c;
          tbl := 'privacy_rules'; act := 'delete'; cond := format('id = %L', e);
          call difftest.record(i, txid_current(), tbl, act, cond);
          delete from public.privacy_rules where id = e;
          commit;
          continue;
        end if;
        update public.privacy_rules set min_role = roles[1 + (random() * 4)::int] where contact_id = c
          returning id into e;
        act := 'update';
      else
        insert into public.privacy_rules (org_id, contact_id, min_role)
        values (o, c, roles[1 + (random() * 4)::int]) returning id into e;
        act := 'insert';
      end if;
      tbl := 'privacy_rules'; cond := format('id = %L', e);
    elsif r < 0.96 then                                -- a contact edited (phone, name)
      select id into c from public.contacts order by random() limit 1;
      update public.contacts set phone = case when random() < 0.1 then null
                                              else '+44' || lpad((random() * 99999999)::int::text, 8, '0') end,
                                 name = 'contact ' || i
       where id = c;
      tbl := 'contacts'; act := 'update'; cond := format('id = %L', c);
    else                                               -- an org renamed
      select id into o from public.orgs order by random() limit 1;
      update public.orgs set name = 'org ' || i where id = o;
      tbl := 'orgs'; act := 'update'; cond := format('id = %L', o);
    end if;
    x := txid_current();
    commit;
    call difftest.record(i, x, tbl, act, cond);
    commit;
  end loop;
end $$;
