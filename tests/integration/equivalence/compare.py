#!/usr/bin/env python3
"""Compares what `walcast tail --as` delivered to each viewer with the oracle PostgreSQL wrote.

usage: compare.py ORACLE.tsv OUTDIR SEED
ORACLE.tsv: step, xid, table, action, viewer, expected json ('' = must not be delivered).
OUTDIR/<viewer>.jsonl: walcast's lines for that viewer.
Values are compared as PostgreSQL text: walcast's typed JSON is turned back into text (numbers
verbatim, booleans t/f), the oracle selected every column ::text through the masking views."""
import json, os, sys
from collections import defaultdict

oracle_path, outdir, seed = sys.argv[1], sys.argv[2], sys.argv[3]

def as_text(v):
    if v is None:
        return None
    if v is True:
        return "t"
    if v is False:
        return "f"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)

expected = defaultdict(dict)   # viewer -> (xid, table, action) -> (step, values)
steps_per_viewer = defaultdict(int)
with open(oracle_path) as f:
    for line in f:
        step, xid, tbl, action, viewer, exp = line.rstrip("\n").split("\t")
        steps_per_viewer[viewer] += 1
        if exp == "":
            continue
        vals = json.loads(exp)
        expected[viewer][(int(xid) & 0xFFFFFFFF, tbl, action)] = (int(step), vals)

failures = 0
checked = 0
delivered_total = 0
for viewer in sorted(steps_per_viewer):
    got = {}
    path = os.path.join(outdir, viewer + ".jsonl")
    with open(path) as f:
        for line in f:
            c = json.loads(line, parse_float=str, parse_int=str)
            row = c["old"] if c["action"] == "delete" else c["new"]
            vals = {k: as_text(v) for k, v in row.items()}
            if "errors" in c and "body" in c["errors"]:
                vals["__body_error"] = "bad"
            key = (int(c["xid"]), c["table"], c["action"])
            if key in got:
                print(f"viewer {viewer}: change {key} delivered twice")
                failures += 1
            got[key] = vals
    delivered_total += len(got)
    exp = expected[viewer]
    for key in sorted(set(exp) | set(got), key=lambda k: (exp.get(k, (0,))[0], k)):
        checked += 1
        if key not in got:
            print(f"viewer {viewer}: step {exp[key][0]} {key}: expected, not delivered: {json.dumps(exp[key][1])}")
            failures += 1
        elif key not in exp:
            print(f"viewer {viewer}: {key}: delivered but RLS hides it: {json.dumps(got[key])}")
            failures += 1
        elif got[key] != exp[key][1]:
            e, g = exp[key][1], got[key]
            diff = {k: (e.get(k), g.get(k)) for k in set(e) | set(g) if e.get(k) != g.get(k)}
            print(f"viewer {viewer}: step {exp[key][0]} {key}: values differ (expected, got): {diff}")
            failures += 1
        if failures > 30:
            break
    if failures > 30:
        print("... stopping after 30 differences")
        break

total = sum(steps_per_viewer.values())
print(f"# {len(steps_per_viewer)} viewers, {total} (step, viewer) decisions, {delivered_total} deliveries compared")
if failures:
    print(f"# FAILED with seed {seed}: replay with WALCAST_SEED={seed}")
    print(f"0 passed, 1 failed")
    sys.exit(1)
print("1 passed, 0 failed")
