#!/usr/bin/env python3
"""The oracle side of tests/integration/redis_stream.sh: reads the whole stream (XRANGE, through a
minimal RESP client: no Python redis module on Debian's test machines) and writes

  OUT/problems  one line per structural fault: ids not derived from the transaction's commit LSN,
                a transaction not framed B ... C, an xid twice (a transaction written twice),
                an INSERT of a key already present, an UPDATE or DELETE of a key not present
  OUT/counts    "xid table action count" per transaction, sorted (compared with SQL's tally)
  OUT/rows      the tables rebuilt by applying the stream's changes in stream order, one
                "table<TAB>json" line per row (values as PostgreSQL's text), sorted
  OUT/summary   entries, transactions, changes

Usage: redis_stream_check.py [HOST:]PORT KEY OUT   (HOST: 127.0.0.1 unless given)
"""
import json
import os
import socket
import sys


def resp_read(f):
    line = f.readline()
    if not line:
        raise EOFError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [resp_read(f) for _ in range(n)]
    raise RuntimeError("bad reply %r" % line)


def command(sock, f, *args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    sock.sendall(b"".join(out))
    return resp_read(f)


def entries(addr, key):
    host, _, port = addr.rpartition(":")
    sock = socket.create_connection((host or "127.0.0.1", int(port)))
    f = sock.makefile("rb")
    start = "-"
    while True:
        batch = command(sock, f, "XRANGE", key, start, "+", "COUNT", 5000)
        for eid, fields in batch:
            yield eid.decode(), dict(zip(fields[0::2], fields[1::2]))
        if len(batch) < 5000:
            return
        ms, seq = batch[-1][0].decode().split("-")
        start = "%s-%d" % (ms, int(seq) + 1)


def lsn(text):
    hi, lo = text.split("/")
    return int(hi, 16) << 32 | int(lo, 16)


def value(col):
    v = col["value"]
    if v is None:
        return None
    if v is True or v is False:
        return "t" if v else "f"
    if int(col["typeoid"]) == 17:  # bytea (parse_int=str: the number is text)
        return "\\x" + v
    return v


def main():
    addr, key, out = sys.argv[1], sys.argv[2], sys.argv[3]
    problems, counts, tables = [], {}, {}
    seen_xids = set()
    txn = None  # [xid, commit_lsn ms, next seq, per (table, action) counts]
    last_ms = -1
    n_entries = n_txns = n_changes = 0
    for eid, fields in entries(addr, key):
        n_entries += 1
        ms, seq = (int(x) for x in eid.split("-"))
        line = json.loads(fields[b"data"], parse_int=str, parse_float=str)
        action = line["action"]
        if action == "B":
            if txn is not None:
                problems.append("%s: B inside transaction %s" % (eid, txn[0]))
            if seq != 0 or ms != lsn(line["lsn"]):
                problems.append("%s: B id is not <commit_lsn>-0 (lsn %s)" % (eid, line["lsn"]))
            if ms <= last_ms:
                problems.append("%s: transaction not after the previous one" % eid)
            if line["xid"] in seen_xids:
                problems.append("%s: xid %s twice" % (eid, line["xid"]))
            seen_xids.add(line["xid"])
            txn = [line["xid"], ms, 1, {}]
            last_ms = ms
            continue
        if action == "M" and line.get("transactional") is False:
            if ms <= last_ms or seq != 0:
                problems.append("%s: message id not after the previous entry" % eid)
            last_ms = ms
            continue
        if txn is None or ms != txn[1] or seq != txn[2] or str(line.get("xid")) != str(txn[0]):
            problems.append("%s: %s not in sequence in its transaction" % (eid, action))
            continue
        txn[2] += 1
        if action == "C":
            if lsn(line["lsn"]) != ms:
                problems.append("%s: C lsn %s is not the id's" % (eid, line["lsn"]))
            for (t, a), c in txn[3].items():
                counts["%s %s %s" % (txn[0], t, a)] = c
            n_txns += 1
            txn = None
            continue
        if action not in "IUD":
            continue
        n_changes += 1
        t = line["table"]
        name = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}[action]
        txn[3][(t, name)] = txn[3].get((t, name), 0) + 1
        rows = tables.setdefault(t, {})
        pk = [c["name"] for c in line["pk"]]
        new = {c["name"]: value(c) for c in line.get("columns", [])}
        old = {c["name"]: value(c) for c in line.get("identity", [])}
        if action == "I":
            k = tuple(new.get(p) for p in pk)
            if k in rows:
                problems.append("%s: INSERT into %s of key %s present already" % (eid, t, k))
            rows[k] = new
        elif action == "U":
            k = tuple((old if old else new).get(p) for p in pk)
            if k not in rows:
                problems.append("%s: UPDATE of %s key %s not present" % (eid, t, k))
                continue
            row = rows.pop(k)
            row.update(new)  # columns left out are unchanged TOAST values: the old row's
            rows[tuple(row.get(p) for p in pk)] = row
        else:
            k = tuple(old.get(p) for p in pk)
            if rows.pop(k, None) is None:
                problems.append("%s: DELETE from %s of key %s not present" % (eid, t, k))
    if txn is not None:
        problems.append("the stream ends inside transaction %s" % txn[0])
    with open(os.path.join(out, "problems"), "w") as f:
        f.writelines(p + "\n" for p in problems)
    with open(os.path.join(out, "counts"), "w") as f:
        f.writelines("%s %d\n" % (k, v) for k, v in sorted(counts.items()))
    with open(os.path.join(out, "rows"), "w") as f:
        lines = ["%s\t%s\n" % (t, json.dumps(r, sort_keys=True)) for t, rows in tables.items() for r in rows.values()]
        f.writelines(sorted(lines))
    with open(os.path.join(out, "summary"), "w") as f:
        f.write("%d entries, %d transactions, %d row changes\n" % (n_entries, n_txns, n_changes))


def normalize_sql(path):
    """SQL's rows ("table<TAB>json_build_object text") in the form main() writes."""
    lines = []
    with open(path) as f:
        for line in f:
            t, j = line.rstrip("\n").split("\t", 1)
            lines.append("%s\t%s\n" % (t, json.dumps(json.loads(j), sort_keys=True)))
    sys.stdout.writelines(sorted(lines))


if __name__ == "__main__":
    if sys.argv[1] == "--normalize":
        normalize_sql(sys.argv[2])
    else:
        main()
