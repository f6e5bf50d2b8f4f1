-- The RLS-equivalence workload and its oracle (tests/integration/rls_equivalence.sh).
--
-- A seeded random sequence of transactions over the seven platform tables, each made of one to
-- four operations that mix policy changes (memberships added, removed, promoted, demoted, seats
-- handed over; privacy rules added, changed, removed) and data changes (inserts, updates and
-- deletes on every governed table, org deletion with its cascades, org creation), in either
-- order, some of them inside savepoints that are rolled back. After each transaction the oracle
-- records, for every change of it and every viewer, what PostgreSQL itself shows that viewer
-- (DESIGN.md, "What 'equivalent to RLS' means, testably"):
--
--   * an INSERT, or an UPDATE's new row: the row version as the masking view walcast.<t>_masked
--     shows it to the viewer after the commit (NULL: the viewer must not receive the change);
--   * a DELETE, or an UPDATE's old row: the row as that view showed it to the viewer just before
--     the transaction.
--
-- "Just before" is reconstructed, not remembered: every change is logged by a row trigger into
-- difftest.changes (unlogged, so walcast never sees it); after the commit, a subtransaction undoes
-- the transaction's changes in reverse order (session_replication_role = replica: no triggers,
-- no foreign-key actions), which restores exactly the pre-transaction rows of everything the
-- transaction touched, memberships and privacy rules included; the views are queried as every
-- viewer there, and the subtransaction is rolled back. The views' answers depend only on the row
-- itself, public.org_roles and public.privacy_rules (walcast.user_rank, contact_min_rank), so the
-- reconstruction answers exactly as the database did before the transaction.
--
-- Row versions that never existed at a commit (a row changed twice in one transaction: inserted
-- then updated, updated twice, inserted then deleted) cannot be shown by the views. The random
-- workload never touches a row twice in one transaction (every operation skips rows already
-- touched in it; judge() refuses otherwise), so for it every new version is the committed one and
-- every old version the previous commit's. cases.sql adds hand-written transactions that do touch
-- rows twice; for those the oracle judges the intermediate version with the same policy and view
-- definitions, read from the catalog and applied to a copy of the table that holds only that
-- version (difftest.v_<t>, difftest.v_<t>_masked): a new intermediate version by the state as of
-- the commit (DESIGN.md: "that row version ... by the policy state as of T's commit"); an old
-- intermediate version (the old row of the second update, the delete of a row inserted in the
-- same transaction) was never visible "just before T": it is judged by the state as of the
-- commit too, the state that judged its creation (issue 6: whoever received the INSERT receives
-- the DELETE, nobody else). The oracle records both states' judgements (expected / old_expected:
-- just before; expected_alt / old_alt: as of the commit) and compare.py requires the latter.
-- For committed versions the copy's answer is checked against the real view's (difftest.mismatch),
-- which validates the copy on thousands of rows per run.
--
-- Viewers (difftest.viewers): every user by id (walcast tail --as, token role authenticated), and
-- tokens with other roles (tail --jwt): service_role (bypasses RLS: every row, unmasked), anon and
-- a role the database does not know, which PostgreSQL lets read nothing here.
create schema if not exists difftest;
create unlogged table difftest.viewers (name text primary key, uid uuid, role text not null);
create unlogged table difftest.bodies (id uuid primary key, body bytea not null, plain text, bad boolean not null);
create sequence difftest.change_seq;
create unlogged table difftest.changes (
  xid bigint not null, seq bigint not null default nextval('difftest.change_seq'), tbl text not null,
  action text not null, pk text, old_pk text, old_raw jsonb, new_raw jsonb, judged boolean not null default false
);
create index on difftest.changes (xid);
create unlogged table difftest.oracle (
  step int not null, xid bigint not null, seq bigint not null, tbl text not null, action text not null,
  pk text not null, viewer text not null,
  expected jsonb,      -- the delivered row (INSERT/UPDATE: new, DELETE: old); NULL: must not be delivered
  expected_alt jsonb,  -- what is required: = expected, except for the DELETE of a version created
                       -- in the transaction: its judgement as of the commit
  old_expected jsonb,  -- UPDATE: its old row as the viewer saw it before (NULL: not visible)
  old_alt jsonb,       -- what is required: = old_expected, except for an old row created in the
                       -- transaction: its judgement as of the commit
  old_known boolean not null default true  -- false: old_expected/old_alt are both acceptable
);
create unlogged table difftest.steps (step int primary key, xid bigint, label text, changes int, lsn pg_lsn);
create unlogged table difftest.mismatch (step int, tbl text, pk text, viewer text, view_row jsonb, copy_row jsonb);
-- Users the workload moves between orgs: the --as viewers.
create view difftest.users as select uid from difftest.viewers where role = 'authenticated' and name = uid::text;

create function difftest.pk_of(tbl text, r jsonb) returns text language sql immutable as $$
  select case when r is null then null
              when tbl = 'org_roles' then (r->>'org_id') || '/' || (r->>'user_id')
              else r->>'id' end
$$;
create function difftest.pk_cond(tbl text, pk text) returns text language sql immutable as $$
  select case when tbl = 'org_roles' then format('org_id = %L and user_id = %L', split_part(pk, '/', 1), split_part(pk, '/', 2))
              else format('id = %L', pk) end
$$;

-- Every row change of the platform tables, in the order PostgreSQL makes them (per row).
create function difftest.log_change() returns trigger language plpgsql as $$
begin
  insert into difftest.changes (xid, tbl, action, pk, old_pk, old_raw, new_raw)
  values (txid_current(), tg_table_name, lower(tg_op),
          case when tg_op <> 'DELETE' then difftest.pk_of(tg_table_name, to_jsonb(new)) end,
          case when tg_op <> 'INSERT' then difftest.pk_of(tg_table_name, to_jsonb(old)) end,
          case when tg_op <> 'INSERT' then to_jsonb(old) end,
          case when tg_op <> 'DELETE' then to_jsonb(new) end);
  return null;
end $$;

-- Whether this transaction already changed the row tbl/pk (the random workload touches a row once).
create function difftest.touched(t text, p text) returns boolean language sql as $$
  select exists (select 1 from difftest.changes
                  where xid = txid_current() and tbl = t and (pk = p or old_pk = p))
$$;
-- Whether this transaction already changed any row of org o (org deletion needs none).
create function difftest.org_touched(o uuid) returns boolean language sql as $$
  select exists (select 1 from difftest.changes
                  where xid = txid_current()
                    and (new_raw->>'org_id' = o::text or old_raw->>'org_id' = o::text
                         or (tbl = 'orgs' and (pk = o::text or old_pk = o::text))))
$$;

-- Per table: the masking view's columns, and a copy of the table with the same read policy and
-- the same view definition (read from the catalog), to judge a row version no commit ever held.
create unlogged table difftest.views (tbl text primary key, cols text not null);
do $$
declare
  t text; def text; q text;
begin
  foreach t in array array['orgs', 'org_roles', 'contacts', 'privacy_rules', 'events', 'audit_log', 'sync_health'] loop
    execute format('create trigger difftest_log after insert or update or delete on public.%I for each row execute function difftest.log_change()', t);
    insert into difftest.views
    select t, string_agg(format('%L, v.%I::text', column_name, column_name), ', ' order by ordinal_position)
      from information_schema.columns where table_schema = 'walcast' and table_name = t || '_masked';
    execute format('create unlogged table difftest.%I (like public.%I)', 'v_' || t, t);
    select qual into q from pg_policies where schemaname = 'public' and tablename = t and policyname = t || '_select';
    execute format('alter table difftest.%I enable row level security', 'v_' || t);
    execute format('create policy p on difftest.%I for select to authenticated using (%s)', 'v_' || t, q);
    def := pg_get_viewdef(format('walcast.%I', t || '_masked')::regclass);
    if def !~ ('FROM (public\.)?' || t || ';?\s*$') then
      raise exception 'difftest: unexpected definition of walcast.%_masked: %', t, def;
    end if;
    def := regexp_replace(def, 'FROM (public\.)?' || t || ';?\s*$', format('FROM difftest.%I %I', 'v_' || t, t));
    execute format('create view difftest.%I with (security_invoker = true) as %s', 'v_' || t || '_masked', def);
    execute format('grant select on difftest.%I, difftest.%I to authenticated, service_role', 'v_' || t, 'v_' || t || '_masked');
  end loop;
end $$;
grant usage on schema difftest to authenticated, service_role;

-- The body arrives decrypted (or null with a marker) from walcast: map ciphertext to plaintext.
create function difftest.map_body(result jsonb) returns jsonb language sql stable as $$
  select case when result is null or result->>'body' is null then result
              else (select case when b.bad then jsonb_set(result, '{body}', 'null') || '{"__body_error": "bad"}'
                                else jsonb_set(result, '{body}', to_jsonb(b.plain)) end
                      from difftest.bodies b where b.body = decode(substr(result->>'body', 3), 'hex'))
         end
$$;

-- Rows of a masking view (the table's own, or its copy's: src 'walcast' or 'difftest') matching
-- cond, as text values, as every viewer: {viewer: {column: value}} for the viewers who see one.
create function difftest.observe_all(tbl text, cond text, src text default 'walcast') returns jsonb
language plpgsql as $$
declare
  v record; cols text; row jsonb; result jsonb := '{}';
  view text := case when src = 'walcast' then format('walcast.%I', tbl || '_masked')
                    else format('difftest.%I', 'v_' || tbl || '_masked') end;
begin
  select w.cols into cols from difftest.views w where w.tbl = observe_all.tbl;
  for v in select * from difftest.viewers order by name loop
    row := null;
    if not exists (select 1 from pg_roles where rolname = v.role) then
      continue;  -- a role the database does not know reads nothing
    end if;
    perform set_config('request.jwt.claims', json_build_object('sub', v.uid, 'role', v.role)::text, true);
    if v.role in ('authenticated', 'service_role') then
      execute format('set local role %I', v.role);
      execute format('select jsonb_build_object(%s) from %s v where %s', cols, view, cond) into row;
      reset role;
    else
      begin  -- anon and other roles: whatever PostgreSQL grants them (here: permission denied)
        execute format('set local role %I', v.role);
        execute format('select jsonb_build_object(%s) from %s v where %s', cols, view, cond) into row;
        reset role;
      exception when insufficient_privilege then
        row := null;
      end;
    end if;
    perform set_config('request.jwt.claims', '', true);
    if row is not null then
      result := result || jsonb_build_object(v.name, difftest.map_body(row));
    end if;
  end loop;
  return result;
end $$;

-- One row version judged by the current policy state, as every viewer (through the copy).
create function difftest.observe_version(tbl text, raw jsonb) returns jsonb language plpgsql as $$
declare result jsonb;
begin
  execute format('insert into difftest.%I select * from jsonb_populate_record(null::public.%I, $1)', 'v_' || tbl, tbl) using raw;
  result := difftest.observe_all(tbl, difftest.pk_cond(tbl, difftest.pk_of(tbl, raw)), 'difftest');
  execute format('delete from difftest.%I', 'v_' || tbl);
  return result;
end $$;

-- Judges the one transaction whose changes are not judged yet: writes difftest.oracle rows for
-- every change and viewer. Called right after the transaction's commit, before any other write.
create procedure difftest.judge(step int, label text default null, allow_multi boolean default false)
language plpgsql as $$
declare
  x bigint; ch record; final boolean; pre boolean; obs jsonb; copy jsonb; v text; n int; step_changes int;
  post jsonb := '{}';   -- seq -> {viewer: row} for new versions (commit state)
  post_old jsonb := '{}'; -- seq -> commit-state judgement of intermediate old versions
  before jsonb := '{}'; -- seq -> {viewer: row} for old versions (state before the transaction)
  before_alt jsonb := '{}';
  oseq text;
  lsn pg_lsn := pg_current_wal_insert_lsn();  -- just past the transaction's commit record
begin
  select min(c.xid), count(distinct c.xid), count(*) into x, n, step_changes from difftest.changes c where not c.judged;
  if n = 0 then
    insert into difftest.steps values (step, null, label, 0, pg_current_wal_insert_lsn());
    return;
  end if;
  if n > 1 then
    raise exception 'difftest.judge: % transactions pending', n;
  end if;
  -- After the commit: new versions.
  for ch in select * from difftest.changes where xid = x order by seq loop
    if ch.new_raw is not null then
      final := not exists (select 1 from difftest.changes c where c.xid = x and c.tbl = ch.tbl and c.seq > ch.seq
                                                            and (c.pk = ch.pk or c.old_pk = ch.pk));
      copy := difftest.observe_version(ch.tbl, ch.new_raw);
      if final then
        obs := difftest.observe_all(ch.tbl, difftest.pk_cond(ch.tbl, ch.pk));
        if obs is distinct from copy then
          insert into difftest.mismatch
          select step, ch.tbl, ch.pk, k, obs->k, copy->k
            from (select jsonb_object_keys(obs) k union select jsonb_object_keys(copy)) ks
           where obs->k is distinct from copy->k;
        end if;
      else
        if not allow_multi then
          raise exception 'difftest.judge: step % changed %/% twice', step, ch.tbl, ch.pk;
        end if;
        obs := copy;
      end if;
      post := post || jsonb_build_object(ch.seq::text, obs);
    end if;
    if ch.old_raw is not null and exists (select 1 from difftest.changes c where c.xid = x and c.tbl = ch.tbl
                                             and c.seq < ch.seq and (c.pk = ch.old_pk or c.old_pk = ch.old_pk)) then
      post_old := post_old || jsonb_build_object(ch.seq::text, difftest.observe_version(ch.tbl, ch.old_raw));
    end if;
  end loop;
  -- Just before the transaction: undo it in a subtransaction, observe, roll back.
  begin
    perform set_config('session_replication_role', 'replica', true);
    for ch in select * from difftest.changes where xid = x order by seq desc loop
      if ch.new_raw is not null then
        execute format('delete from public.%I where %s', ch.tbl, difftest.pk_cond(ch.tbl, ch.pk));
      end if;
      if ch.old_raw is not null then
        execute format('insert into public.%I overriding system value select * from jsonb_populate_record(null::public.%I, $1)',
                       ch.tbl, ch.tbl) using ch.old_raw;
      end if;
    end loop;
    for ch in select * from difftest.changes where xid = x and old_raw is not null order by seq loop
      pre := not exists (select 1 from difftest.changes c where c.xid = x and c.tbl = ch.tbl and c.seq < ch.seq
                                                         and (c.pk = ch.old_pk or c.old_pk = ch.old_pk));
      if pre then
        obs := difftest.observe_all(ch.tbl, difftest.pk_cond(ch.tbl, ch.old_pk));
      else
        obs := difftest.observe_version(ch.tbl, ch.old_raw);
        before_alt := before_alt || jsonb_build_object(ch.seq::text, post_old->(ch.seq::text));
      end if;
      before := before || jsonb_build_object(ch.seq::text, obs);
    end loop;
    raise exception using errcode = 'WCUND', message = 'difftest undo';
  exception when sqlstate 'WCUND' then
    null;
  end;
  for ch in select * from difftest.changes where xid = x order by seq loop
    oseq := ch.seq::text;
    for v in select name from difftest.viewers loop
      if ch.action = 'delete' then
        insert into difftest.oracle
        values (step, x, ch.seq, ch.tbl, ch.action, ch.old_pk, v, before->oseq->v,
                coalesce(before_alt->oseq->v, case when before_alt ? oseq then null else before->oseq->v end),
                null, null, true);
      else
        insert into difftest.oracle
        values (step, x, ch.seq, ch.tbl, ch.action, ch.pk, v, post->oseq->v, post->oseq->v,
                before->oseq->v,
                coalesce(before_alt->oseq->v, case when before_alt ? oseq then null else before->oseq->v end),
                not (before_alt ? oseq));
      end if;
    end loop;
  end loop;
  update difftest.changes set judged = true where xid = x;
  insert into difftest.steps values (step, x, label, step_changes, lsn);
end $$;

-- ---- the random operations ---------------------------------------------------------------------
-- Each picks its rows among those this transaction has not touched yet and returns its name (NULL
-- when nothing fitted). Values come from random(), seeded by run().
create function difftest.op(i int, legacy boolean) returns text language plpgsql as $$
declare
  r double precision := random(); r2 double precision;
  o uuid; o2 uuid; c uuid; u uuid; u2 uuid; e uuid; b record; n bigint;
  roles text[] := array['viewer', 'member', 'analyst', 'admin', 'owner'];
begin
  if r < 0.22 then                                     -- insert an event (body from the pool)
    select id, body into b from difftest.bodies d
     where not exists (select 1 from public.events v where v.id = d.id) and not difftest.touched('events', d.id::text)
     order by id limit 1 offset (random() * 5)::int;
    select id into o from public.orgs order by random() limit 1;
    if b.id is null or o is null then return null; end if;
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
    return 'event insert';
  elsif r < 0.36 then                                  -- update an event: status, contact, handler or org
    select id, org_id into e, o from public.events v where not difftest.touched('events', v.id::text) order by random() limit 1;
    if e is null then return null; end if;
    r2 := random();
    if r2 < 0.3 then
      update public.events set status = (array['answered', 'missed', 'delivered'])[1 + (random() * 2)::int] where id = e;
    elsif r2 < 0.6 then
      select id into c from public.contacts where org_id = o order by random() limit 1;
      update public.events set contact_id = case when random() < 0.2 then null else c end where id = e;
    elsif r2 < 0.85 then
      select user_id into u from public.org_roles where org_id = o order by random() limit 1;
      update public.events set user_id = case when random() < 0.2 then null else u end where id = e;
    else
      select id into o2 from public.orgs where id <> o order by random() limit 1;
      if o2 is null then return null; end if;
      update public.events set org_id = o2, contact_id = null where id = e;
    end if;
    return 'event update';
  elsif r < 0.43 then                                  -- delete an event
    select id into e from public.events v where not difftest.touched('events', v.id::text) order by random() limit 1;
    if e is null then return null; end if;
    delete from public.events where id = e;
    return 'event delete';
  elsif r < 0.52 then                                  -- a role change (promotion or demotion)
    select org_id, user_id into o, u from public.org_roles m
     where not difftest.touched('org_roles', m.org_id || '/' || m.user_id) order by random() limit 1;
    if o is null then return null; end if;
    update public.org_roles set role = roles[1 + (random() * 4)::int] where org_id = o and user_id = u;
    return 'role change';
  elsif r < 0.56 then                                  -- a member removed
    select org_id, user_id into o, u from public.org_roles m
     where not difftest.touched('org_roles', m.org_id || '/' || m.user_id) order by random() limit 1;
    if o is null then return null; end if;
    delete from public.org_roles where org_id = o and user_id = u;
    return 'member removed';
  elsif r < 0.61 then                                  -- a user (back) into an org
    select id into o from public.orgs order by random() limit 1;
    select uid into u from difftest.users v
     where not exists (select 1 from public.org_roles m where m.org_id = o and m.user_id = v.uid)
       and not difftest.touched('org_roles', o || '/' || v.uid)
     order by random() limit 1;
    if u is null then return null; end if;
    insert into public.org_roles (org_id, user_id, role) values (o, u, roles[1 + (random() * 4)::int]);
    return 'member added';
  elsif r < 0.65 then                                  -- a seat handed over to a user new to the org
    if legacy then return null; end if;
    select org_id, user_id into o, u from public.org_roles m
     where not difftest.touched('org_roles', m.org_id || '/' || m.user_id) order by random() limit 1;
    if o is null then return null; end if;
    select uid into u2 from difftest.users v
     where not exists (select 1 from public.org_roles m where m.org_id = o and m.user_id = v.uid)
       and not difftest.touched('org_roles', o || '/' || v.uid)
     order by random() limit 1;
    if u2 is null then return null; end if;
    update public.org_roles set user_id = u2 where org_id = o and user_id = u;
    return 'seat handover';
  elsif r < 0.73 then                                  -- a privacy rule added, changed or removed
    select id, org_id into c, o from public.contacts k
     where not difftest.touched('contacts', k.id::text)
       and not exists (select 1 from public.privacy_rules p where p.contact_id = k.id and difftest.touched('privacy_rules', p.id::text))
       and not exists (select 1 from difftest.changes h where h.xid = txid_current() and h.tbl = 'privacy_rules'
                          and (h.new_raw->>'contact_id' = k.id::text or h.old_raw->>'contact_id' = k.id::text))
     order by random() limit 1;
    if c is null then return null; end if;
    if exists (select 1 from public.privacy_rules where contact_id = c) then
      if random() < 0.4 then
        delete from public.privacy_rules where contact_id = c;
        return 'rule removed';
      end if;
      update public.privacy_rules set min_role = roles[1 + (random() * 4)::int] where contact_id = c;
      return 'rule changed';
    end if;
    insert into public.privacy_rules (org_id, contact_id, min_role) values (o, c, roles[1 + (random() * 4)::int]);
    return 'rule added';
  elsif r < 0.78 then                                  -- a contact edited (phone, name)
    select id into c from public.contacts k where not difftest.touched('contacts', k.id::text) order by random() limit 1;
    if c is null then return null; end if;
    update public.contacts set phone = case when random() < 0.1 then null
                                            else '+44' || lpad((random() * 99999999)::int::text, 8, '0') end,
                               name = 'contact ' || i
     where id = c;
    return 'contact update';
  elsif legacy and (r < 0.91 or r >= 0.95) then       -- (the kinds below were not in the old test)
    return null;
  elsif r < 0.81 then                                  -- a contact created, sometimes with a rule
    select id into o from public.orgs order by random() limit 1;
    if o is null then return null; end if;
    c := md5(random()::text)::uuid;
    insert into public.contacts (id, org_id, name, phone)
    values (c, o, 'contact ' || i, case when random() < 0.2 then null else '+1555' || lpad((random() * 9999999)::int::text, 7, '0') end);
    if random() < 0.5 then
      insert into public.privacy_rules (org_id, contact_id, min_role) values (o, c, roles[1 + (random() * 4)::int]);
    end if;
    return 'contact insert';
  elsif r < 0.83 then                                  -- a contact deleted: its events first, its rule cascades
    select id into c from public.contacts k
     where not difftest.touched('contacts', k.id::text)
       and not exists (select 1 from public.events v where v.contact_id = k.id and difftest.touched('events', v.id::text))
       and not exists (select 1 from difftest.changes h where h.xid = txid_current()
                          and (h.new_raw->>'contact_id' = k.id::text or h.old_raw->>'contact_id' = k.id::text))
     order by random() limit 1;
    if c is null then return null; end if;
    delete from public.events where contact_id = c;
    delete from public.contacts where id = c;
    return 'contact delete';
  elsif r < 0.91 then                                  -- audit log and sync health: insert, update, delete
    r2 := random();
    select id into o from public.orgs order by random() limit 1;
    if o is null then return null; end if;
    if r2 < 0.25 then
      insert into public.audit_log (org_id, actor_id, action, target_table, target_id, detail)
      values (o, (select user_id from public.org_roles where org_id = o order by random() limit 1),
              (array['login', 'export', 'role_change'])[1 + (random() * 2)::int], 'events', i::text,
              jsonb_build_object('n', i, 'ok', random() < 0.5));
      return 'audit insert';
    elsif r2 < 0.5 then
      insert into public.sync_health (org_id, source, status, lag_s)
      values (o, (array['twilio', 'crm'])[1 + (random() * 1)::int], 'ok', round((random() * 100)::numeric, 2));
      return 'sync insert';
    elsif r2 < 0.62 then
      select id into n from public.audit_log a where not difftest.touched('audit_log', a.id::text) order by random() limit 1;
      if n is null then return null; end if;
      update public.audit_log set detail = detail || jsonb_build_object('seen', i) where id = n;
      return 'audit update';
    elsif r2 < 0.75 then
      select id into n from public.sync_health s where not difftest.touched('sync_health', s.id::text) order by random() limit 1;
      if n is null then return null; end if;
      update public.sync_health set status = (array['ok', 'lagging', 'down'])[1 + (random() * 2)::int],
                                    lag_s = round((random() * 1000)::numeric, 1), checked_at = checked_at + interval '1 minute'
       where id = n;
      return 'sync update';
    elsif r2 < 0.88 then
      select id into n from public.audit_log a where not difftest.touched('audit_log', a.id::text) order by random() limit 1;
      if n is null then return null; end if;
      delete from public.audit_log where id = n;
      return 'audit delete';
    else
      select id into n from public.sync_health s where not difftest.touched('sync_health', s.id::text) order by random() limit 1;
      if n is null then return null; end if;
      delete from public.sync_health where id = n;
      return 'sync delete';
    end if;
  elsif r < 0.95 then                                  -- an org renamed
    select id into o from public.orgs g where not difftest.touched('orgs', g.id::text) order by random() limit 1;
    if o is null then return null; end if;
    update public.orgs set name = 'org ' || i where id = o;
    return 'org rename';
  elsif r < 0.963 then                                 -- an org deleted, everything in it cascades
    if (select count(*) from public.orgs) <= 2 then return null; end if;
    select id into o from public.orgs g where not difftest.org_touched(g.id) order by random() limit 1;
    if o is null then return null; end if;
    delete from public.orgs where id = o;
    return 'org delete';
  else                                                 -- an org created: an owner, two members, a contact
    if (select count(*) from public.orgs) >= 5 then return null; end if;
    o := md5(random()::text)::uuid;
    insert into public.orgs (id, name) values (o, 'org ' || i);
    insert into public.org_roles (org_id, user_id, role)
    select o, uid, roles[1 + (random() * 4)::int] from difftest.users order by random() limit 3;
    insert into public.contacts (id, org_id, name, phone) values (md5(random()::text)::uuid, o, 'contact ' || i, '+15550000' || lpad((i % 1000)::text, 3, '0'));
    return 'org create';
  end if;
end $$;

-- The random workload: steps transactions of one to four operations; an operation runs inside a
-- subtransaction one time in six, which is rolled back half of those times (BEGIN ... EXCEPTION
-- is PL/pgSQL's SAVEPOINT / ROLLBACK TO SAVEPOINT; cases.sql uses the SQL commands). Each
-- transaction is judged right after its commit.
-- legacy: the old test's workload (one operation per transaction, no savepoint, the old kinds).
create procedure difftest.run(seed double precision, steps int, legacy boolean default false)
language plpgsql as $$
declare
  i int; k int; label text; what text; sp double precision;
begin
  perform setseed(seed);
  for i in 1..steps loop
    label := '';
    for k in 1..(case when legacy then 1 else 1 + (random() * 3.4)::int end) loop
      sp := case when legacy then 1 else random() end;
      if sp < 1.0 / 12 then
        begin
          what := difftest.op(i, legacy);
          raise exception using errcode = 'WCRBK', message = 'rolled back';
        exception when sqlstate 'WCRBK' then
          what := '[rolled back: ' || coalesce(what, '-') || ']';
        end;
      elsif sp < 2.0 / 12 then
        begin  -- an exception clause makes the block a subtransaction, released at its end
          what := '[released: ' || coalesce(difftest.op(i, legacy), '-') || ']';
        exception when sqlstate 'WCNVR' then
          null;
        end;
      else
        what := difftest.op(i, legacy);
      end if;
      label := label || case when label = '' then '' else '; ' end || coalesce(what, '-');
    end loop;
    commit;
    call difftest.judge(i, label);
    commit;
  end loop;
end $$;
