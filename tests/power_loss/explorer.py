"""Crash-state explorer: what a power loss can leave of one operation's files.

Reads an `strace -f -xx` log of a child process that wrote files in one folder, replays
every file-system call on a model of that folder, and at every point between the markers
`@@dsb-mark-begin` and `@@dsb-mark-end` (files the child tried to open) builds the states a
power loss may leave, as ALICE and CrashMonkey do:

* file data: of the blocks that differ from the file's last fsynced content, any subset
  persisted (512- and 4096-byte blocks); an appended region whose blocks were lost reads as
  zeros; the file's size is its last fsynced size or its current one;
* directory entries: a create, rename or unlink since the folder's last fsync is durable
  or not, each independently (applied in the order they were made).

Every subset is built when there are few; otherwise the families that cover each block
alone (each one lost, each one kept), prefixes in file order and seeded random subsets.
Each distinct state is then opened with this Python's own `sqlite3` (which rolls back a
hot journal as any SQLite does) and must pass `integrity_check` and hold exactly the old
or the new content; from the end marker on (the call has returned) only the new.

Usage: explorer.py LOG FOLDER DBNAME [--long] [--initial DIR] (DIR: the folder's files
before the child started). Prints one JSON object.
"""

import hashlib
import itertools
import json
import os
import random
import re
import shutil
import sqlite3
import sys
import tempfile

MARK_BEGIN = "@@dsb-mark-begin"
MARK_END = "@@dsb-mark-end"
BLOCK_SIZES = (512, 4096)
# Distinct states built per crash point, per directory state and block size, outside --long.
PER_POINT = 12
# Crash points explored per recording outside --long (calls that change nothing are skipped).
MAX_POINTS = 120
AT_FDCWD = "AT_FDCWD"


class Unsupported(Exception):
    pass


# ---------------------------------------------------------------- strace log parsing

def unescape(token):
    """A string argument printed by strace -xx: every byte as \\xHH."""
    if not token.startswith('"'):
        raise ValueError(token)
    end = token.rindex('"')
    if token[end + 1:].startswith("..."):
        raise Unsupported("strace truncated a buffer: raise -s")
    body = token[1:end]
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i] == "\\":
            c = body[i + 1]
            if c == "x":
                out.append(int(body[i + 2:i + 4], 16))
                i += 4
                continue
            simple = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "\\": 92, '"': 34}
            out.append(simple[c])
            i += 2
            continue
        out.append(ord(body[i]))
        i += 1
    return bytes(out)


def split_args(text):
    """Top-level comma-separated arguments, respecting quotes and brackets."""
    args, depth, cur, quoted, i = [], 0, [], False, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            cur.append(ch)
            if ch == "\\":
                cur.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            cur.append(ch)
        elif ch in "[{(":
            depth += 1
            cur.append(ch)
        elif ch in "]})":
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if cur or args:
        args.append("".join(cur).strip())
    return args


CALL = re.compile(r"^(\w+)\((.*)\) += (-?\d+|0x[0-9a-f]+|\?)", re.S)


def parse(log):
    """The completed calls, in completion order: (name, args, result)."""
    pending, calls = {}, []
    for raw in log.splitlines():
        pid, _, rest = raw.partition(" ")
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        if rest.startswith("<..."):
            head = pending.pop(pid, None)
            if head is None:
                continue
            rest = head + rest[rest.index("resumed>") + len("resumed>"):]
        m = CALL.match(rest)
        if not m:
            continue
        name, args, ret = m.group(1), m.group(2), m.group(3)
        if ret == "?":
            continue
        calls.append((name, split_args(args), int(ret, 0)))
    return calls


# ---------------------------------------------------------------- the file-system model

class Inode:
    def __init__(self):
        self.cur = bytearray()
        self.dur = b""

    def write(self, off, data):
        end = off + len(data)
        if len(self.cur) < off:
            self.cur.extend(bytes(off - len(self.cur)))
        self.cur[off:end] = data

    def truncate(self, size):
        if size < len(self.cur):
            del self.cur[size:]
        else:
            self.cur.extend(bytes(size - len(self.cur)))

    def dirty_blocks(self, block):
        n = (max(len(self.cur), len(self.dur)) + block - 1) // block
        out = []
        for b in range(n):
            s, e = b * block, (b + 1) * block
            if self.cur[s:e].ljust(e - s, b"\0") != self.dur[s:e].ljust(e - s, b"\0"):
                out.append(b)
        return out

    def crash_content(self, size, kept, block):
        """The file after a power loss: `size` bytes, the blocks in `kept` as written now,
        the others as last synced (zeros past the synced end)."""
        data = bytearray(self.dur[:size].ljust(size, b"\0"))
        for b in kept:
            s = b * block
            e = min((b + 1) * block, size)
            if s < e:
                data[s:e] = bytes(self.cur[s:e]).ljust(e - s, b"\0")
        return bytes(data)


class OpenFile:
    def __init__(self, kind, inode=None, append=False):
        self.kind, self.inode, self.pos, self.append = kind, inode, 0, append


class Model:
    def __init__(self, folder, cwd):
        self.folder = os.path.realpath(folder)
        self.cwd = cwd
        self.ns = {}  # name -> Inode
        self.durable_ns = {}
        self.pending = []  # directory operations since the folder's last fsync
        self.fds = {}
        self.fds_paths = {}
        self.stats = {"renames_onto": {}, "writes_to": {}, "fsyncs_of": {}}

    def load(self, initial):
        """Files the folder held before the child started, all durable."""
        if initial is None:
            return
        for name in sorted(os.listdir(initial)):
            ino = Inode()
            with open(os.path.join(initial, name), "rb") as f:
                ino.cur = bytearray(f.read())
            self.ns[name] = ino
        self.everything_durable()

    def everything_durable(self):
        for ino in self.ns.values():
            ino.dur = bytes(ino.cur)
        self.durable_ns = dict(self.ns)
        self.pending = []

    def resolve(self, dirfd, path):
        if not os.path.isabs(path):
            base = self.cwd if dirfd == AT_FDCWD else self.fds_paths.get(int(dirfd), self.cwd)
            path = os.path.join(base, path)
        return os.path.normpath(path)

    def name_in_folder(self, path):
        """The entry name if `path` is directly in the folder (links in the folder's own
        path resolved), else None."""
        parent, name = os.path.split(path)
        if os.path.realpath(parent) == self.folder:
            return name
        return None

    def dir_op(self, op):
        self.pending.append(op)

    def count(self, key, name):
        self.stats[key][name] = self.stats[key].get(name, 0) + 1

    def apply(self, name, args, ret):
        if ret < 0:
            return
        fd_of = lambda i: self.fds.get(int(args[i], 0)) if args[i].lstrip("-").isdigit() else None
        if name in ("openat", "open", "creat"):
            if name == "openat":
                dirfd, path, flags = args[0], unescape(args[1]).decode(), args[2]
            elif name == "open":
                dirfd, path, flags = AT_FDCWD, unescape(args[0]).decode(), args[1]
            else:
                dirfd, path, flags = AT_FDCWD, unescape(args[0]).decode(), "O_CREAT|O_WRONLY|O_TRUNC"
            full = self.resolve(dirfd, path)
            self.fds_paths[ret] = full
            if os.path.realpath(full) == self.folder:
                self.fds[ret] = OpenFile("dir")
                return
            entry = self.name_in_folder(full)
            if entry is None:
                self.fds[ret] = OpenFile("outside")
                return
            ino = self.ns.get(entry)
            if ino is None:
                if "O_CREAT" not in flags:
                    raise Unsupported(f"open of {entry} not in the model")
                ino = Inode()
                self.ns[entry] = ino
                self.dir_op(("link", entry, ino))
            elif "O_TRUNC" in flags:
                ino.truncate(0)
            self.fds[ret] = OpenFile("file", ino, "O_APPEND" in flags)
        elif name in ("write", "pwrite64", "writev", "pwritev", "pwritev2"):
            f = fd_of(0)
            if f is None or f.kind != "file":
                return
            if name in ("write", "pwrite64"):
                data = unescape(args[1])[:ret]
            else:
                data = b"".join(unescape(m) for m in re.findall(r'iov_base=("[^"]*")', args[1]))[:ret]
            if name in ("write", "writev"):
                off = len(f.inode.cur) if f.append else f.pos
                f.pos = off + ret
            else:
                off = int(args[3] if name == "pwrite64" else args[3], 0)
            f.inode.write(off, data)
            self.count("writes_to", self.name_of(f.inode))
        elif name == "lseek":
            f = fd_of(0)
            if f is not None:
                f.pos = ret
        elif name == "ftruncate":
            f = fd_of(0)
            if f is not None and f.kind == "file":
                f.inode.truncate(int(args[1], 0))
        elif name == "truncate":
            entry = self.name_in_folder(self.resolve(AT_FDCWD, unescape(args[0]).decode()))
            if entry is not None:
                self.ns[entry].truncate(int(args[1], 0))
        elif name == "fallocate":
            f = fd_of(0)
            if f is not None and f.kind == "file":
                mode = args[1]
                if mode not in ("0",) and "KEEP_SIZE" not in mode:
                    raise Unsupported(f"fallocate mode {mode}")
                end = int(args[2], 0) + int(args[3], 0)
                if mode == "0" and end > len(f.inode.cur):
                    f.inode.truncate(end)
        elif name in ("fsync", "fdatasync"):
            f = fd_of(0)
            if f is None:
                return
            if f.kind == "file":
                f.inode.dur = bytes(f.inode.cur)
                self.count("fsyncs_of", self.name_of(f.inode))
            elif f.kind == "dir":
                self.durable_ns = dict(self.ns)
                self.pending = []
                self.count("fsyncs_of", ".")
        elif name == "close":
            self.fds.pop(int(args[0], 0), None)
        elif name in ("dup", "dup2", "dup3"):
            f = self.fds.get(int(args[0], 0))
            if f is not None:
                self.fds[ret] = f
        elif name == "fcntl":
            if args[1].startswith("F_DUPFD"):
                f = self.fds.get(int(args[0], 0))
                if f is not None:
                    self.fds[ret] = f
        elif name in ("rename", "renameat", "renameat2"):
            if name == "rename":
                old = self.resolve(AT_FDCWD, unescape(args[0]).decode())
                new = self.resolve(AT_FDCWD, unescape(args[1]).decode())
            else:
                old = self.resolve(args[0], unescape(args[1]).decode())
                new = self.resolve(args[2], unescape(args[3]).decode())
                if name == "renameat2" and args[4] not in ("0",):
                    raise Unsupported(f"renameat2 flags {args[4]}")
            o, n = self.name_in_folder(old), self.name_in_folder(new)
            if o is None and n is None:
                return
            if o is None or n is None:
                raise Unsupported("rename across the folder's boundary")
            ino = self.ns.pop(o)
            self.ns[n] = ino
            self.dir_op(("rename", o, n, ino))
            self.count("renames_onto", n)
        elif name in ("unlink", "unlinkat"):
            if name == "unlink":
                path = self.resolve(AT_FDCWD, unescape(args[0]).decode())
            else:
                if "AT_REMOVEDIR" in args[2]:
                    return
                path = self.resolve(args[0], unescape(args[1]).decode())
            entry = self.name_in_folder(path)
            if entry is not None:
                self.ns.pop(entry, None)
                self.dir_op(("unlink", entry))
        elif name in ("link", "linkat"):
            if name == "link":
                old = self.resolve(AT_FDCWD, unescape(args[0]).decode())
                new = self.resolve(AT_FDCWD, unescape(args[1]).decode())
            else:
                old = self.resolve(args[0], unescape(args[1]).decode())
                new = self.resolve(args[2], unescape(args[3]).decode())
            o, n = self.name_in_folder(old), self.name_in_folder(new)
            if n is not None:
                if o is None:
                    raise Unsupported("link into the folder from outside")
                self.ns[n] = self.ns[o]
                self.dir_op(("link", n, self.ns[o]))
        elif name in ("copy_file_range", "sendfile", "mmap"):
            if name == "mmap":
                if "MAP_SHARED" in args[3] and "PROT_WRITE" in args[2]:
                    f = fd_of(4)
                    # A WAL's `-shm` index is mapped so; no recovery ever reads it.
                    shm = any(n.endswith("-shm") and i is f.inode for n, i in self.ns.items()) if f else False
                    if f is not None and f.kind == "file" and not shm:
                        raise Unsupported("a writable shared mapping of a file in the folder")
                return
            f = fd_of(0 if name == "sendfile" else 2)
            if f is not None and f.kind == "file":
                raise Unsupported(f"{name} into the folder")

    def name_of(self, ino):
        for n, i in self.ns.items():
            if i is ino:
                return n
        return "(unlinked)"

    def signature(self):
        return (
            tuple(sorted((n, id(i)) for n, i in self.ns.items())),
            tuple(sorted((n, id(i)) for n, i in self.durable_ns.items())),
            len(self.pending),
            tuple(sorted((id(i), hashlib.blake2b(bytes(i.cur), digest_size=8).digest(),
                          hashlib.blake2b(i.dur, digest_size=8).digest())
                         for i in set(self.ns.values()) | set(self.durable_ns.values()))),
        )


# ---------------------------------------------------------------- crash states

def namespaces(model, long_mode):
    """The directory states a crash may leave: subsets of the pending operations."""
    ops = model.pending
    n = len(ops)
    if n <= (10 if long_mode else 6):
        choices = itertools.product((False, True), repeat=n)
    else:
        every = [True] * n
        choices = [[False] * n, every] + [
            [j != i for j in range(n)] for i in range(n)
        ] + [[j < i for j in range(n)] for i in range(n)]
    out = []
    for choice in choices:
        ns = dict(model.durable_ns)
        for keep, op in zip(choice, ops):
            if not keep:
                continue
            if op[0] == "link":
                ns[op[1]] = op[2]
            elif op[0] == "unlink":
                ns.pop(op[1], None)
            elif op[0] == "rename":
                if ns.get(op[1]) is op[3]:
                    del ns[op[1]]
                    ns[op[2]] = op[3]
        out.append(ns)
    return out


def block_families(dirty, rng, long_mode):
    """Subsets of `dirty` (a list of (inode, block)) to keep, most telling first: none, all,
    then seeded random subsets interleaved with each block lost alone and kept alone, and
    prefixes in file order."""
    n = len(dirty)
    if n <= (12 if long_mode else 8):
        return [frozenset(c) for r in range(n + 1) for c in itertools.combinations(dirty, r)]
    every = frozenset(dirty)
    singles = dirty if long_mode else sorted(
        set(dirty[:: max(1, n // 16)]) | set(dirty[:4]) | {dirty[-1]}, key=dirty.index)
    cuts = range(1, n) if long_mode else range(1, n, max(1, n // 8))
    randoms = [frozenset(d for d in dirty if rng.random() < 0.5)
               for _ in range(400 if long_mode else 24)]
    fams = [frozenset(), every]
    for i in range(max(len(singles), len(randoms))):
        if i < len(randoms):
            fams.append(randoms[i])
        if i < len(singles):
            fams.append(every - {singles[i]})
            fams.append(frozenset([singles[i]]))
    fams.extend(frozenset(dirty[:i]) for i in cuts)
    return fams


def crash_states(model, watched, point, long_mode):
    """Distinct (name -> bytes) a power loss at this point may leave of `watched`, at most
    PER_POINT of them outside --long."""
    rng = random.Random(point)
    seen = {}
    cap = None if long_mode else PER_POINT
    for ns in namespaces(model, long_mode):
        inodes = []
        for name in watched:
            ino = ns.get(name)
            if ino is not None and all(ino is not i for i in inodes):
                inodes.append(ino)
        for block in BLOCK_SIZES:
            dirty = [(k, b) for k, ino in enumerate(inodes) for b in ino.dirty_blocks(block)]
            size_choices = [tuple(len(i.cur) for i in inodes), tuple(len(i.dur) for i in inodes)]
            for k in range(len(inodes)):
                mixed = list(size_choices[0])
                mixed[k] = len(inodes[k].dur)
                size_choices.append(tuple(mixed))
            size_choices = list(dict.fromkeys(size_choices))
            added = 0
            for kept in block_families(dirty, rng, long_mode):
                if cap is not None and added >= cap:
                    break
                for sizes in size_choices:
                    files = {}
                    for name in watched:
                        ino = ns.get(name)
                        if ino is None:
                            continue
                        k = next(j for j, i in enumerate(inodes) if i is ino)
                        blocks = [b for (kk, b) in kept if kk == k]
                        files[name] = ino.crash_content(sizes[k], blocks, block)
                    key = hashlib.blake2b(
                        repr(sorted((n, hashlib.blake2b(d).digest()) for n, d in files.items())).encode()
                    ).digest()
                    if key not in seen:
                        seen[key] = files
                        added += 1
    return seen


# ---------------------------------------------------------------- checking a state

def content_of(files, dbname, scratch):
    """What an independent SQLite makes of `files`: 'missing', ('bad', why) or the dump."""
    if dbname not in files:
        return "missing"
    for f in os.listdir(scratch):
        os.unlink(os.path.join(scratch, f))
    for name, data in files.items():
        with open(os.path.join(scratch, name), "wb") as out:
            out.write(data)
    try:
        con = sqlite3.connect(os.path.join(scratch, dbname), isolation_level=None)
        try:
            check = [r[0] for r in con.execute("PRAGMA integrity_check")]
            if check != ["ok"]:
                return ("bad", "integrity_check: " + "; ".join(check[:3]))
            # The schema and every row, in rowid order: what any reader sees.
            digest = hashlib.sha256()
            tables = con.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name").fetchall()
            digest.update(repr(tables).encode())
            for kind, name, _, _ in tables:
                if kind == "table" and not name.startswith("sqlite_"):
                    for row in con.execute('SELECT * FROM "%s"' % name.replace('"', '""')):
                        digest.update(repr(row).encode())
            return digest.hexdigest()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return ("bad", f"{type(e).__name__}: {e}")


def crash_points_to_explore(calls, begin, end, long_mode):
    """The calls after which a power loss is explored: every one, or outside --long, at most
    MAX_POINTS of those that change a file or the folder (the first and last ones, every
    fsync and directory operation, and evenly spaced others)."""
    changing = [i for i in range(begin, end + 1)
                if i in (begin, end) or calls[i][0] not in ("close", "lseek", "openat", "open", "mmap", "fcntl")]
    if long_mode or len(changing) <= MAX_POINTS:
        return set(range(begin, end + 1))
    key = {i for i in changing if calls[i][0] in (
        "fsync", "fdatasync", "rename", "renameat", "renameat2", "unlink", "unlinkat", "ftruncate")}
    keep = set(changing[:MAX_POINTS // 4]) | set(changing[-MAX_POINTS // 4:]) | key | {begin, end}
    step = max(1, len(changing) // (MAX_POINTS // 2))
    keep |= set(changing[::step])
    # A sync or rename is explored with the call just before it.
    keep |= {changing[max(0, changing.index(i) - 1)] for i in key}
    return keep


def main():
    log_path, folder, dbname = sys.argv[1:4]
    rest = sys.argv[4:]
    long_mode = "--long" in rest
    initial = rest[rest.index("--initial") + 1] if "--initial" in rest else None
    with open(log_path, encoding="latin-1") as f:
        calls = parse(f.read())
    watched = [dbname, dbname + "-journal", dbname + "-wal"]
    model = Model(folder, cwd=os.getcwd())
    model.load(initial)
    scratch = tempfile.mkdtemp(prefix="dsb-crash-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    result = {"calls": len(calls), "crash_points": 0, "states": 0, "bad": 0, "examples": []}
    try:
        begin = end = None
        for i, (name, args, ret) in enumerate(calls):
            if name in ("openat", "open") and ret < 0:
                path = unescape(args[1 if name == "openat" else 0]).decode()
                if path.endswith(MARK_BEGIN):
                    begin = i
                elif path.endswith(MARK_END):
                    end = i
        if begin is None or end is None or end < begin:
            raise Unsupported("markers missing from the trace")
        for name, args, ret in calls[:begin]:
            model.apply(name, args, ret)
        model.everything_durable()
        base_stats = json.loads(json.dumps(model.stats))
        old = content_of({n: bytes(model.ns[n].cur) for n in watched if n in model.ns}, dbname, scratch)
        if isinstance(old, tuple):
            raise Unsupported(f"the old state is not a database: {old[1]}")
        # The new content first: every call up to the end mark, all of it persisted.
        final_model = Model(folder, cwd=os.getcwd())
        final_model.load(initial)
        for call in calls[: end + 1]:
            final_model.apply(*call)
        final = {n: bytes(final_model.ns[n].cur) for n in watched if n in final_model.ns}
        new = content_of(final, dbname, scratch)
        if isinstance(new, tuple):
            raise Unsupported(f"the new state is not a database: {new[1]}")
        checked = {}
        last_sig = None
        explored = crash_points_to_explore(calls, begin, end, long_mode)
        for i in range(begin, end + 1):
            if i > begin:
                model.apply(*calls[i])
            if i not in explored:
                continue
            sig = model.signature()
            if sig == last_sig and i != end:
                continue
            last_sig = sig
            result["crash_points"] += 1
            returned = i == end
            allowed = {new} if returned else {old, new}
            for key, files in crash_states(model, watched, i, long_mode).items():
                verdict = checked.get(key)
                if verdict is None:
                    verdict = content_of(files, dbname, scratch)
                    checked[key] = verdict
                    result["states"] += 1
                if verdict not in allowed:
                    result["bad"] += 1
                    if len(result["examples"]) < 5:
                        why = verdict[1] if isinstance(verdict, tuple) else (
                            "old content after the call returned" if verdict == old else
                            "missing" if verdict == "missing" else "neither old nor new content")
                        result["examples"].append({
                            "call": i - begin,
                            "after_return": returned,
                            "why": why,
                            "files": {n: len(d) for n, d in files.items()},
                        })
        result["old_is_new"] = old == new
        result["old_missing"] = old == "missing"
        stats = model.stats
        result["renames_onto"] = stats["renames_onto"].get(dbname, 0) - base_stats["renames_onto"].get(dbname, 0)
        result["journal_writes"] = stats["writes_to"].get(dbname + "-journal", 0) - base_stats["writes_to"].get(dbname + "-journal", 0)
        result["db_writes"] = stats["writes_to"].get(dbname, 0) - base_stats["writes_to"].get(dbname, 0)
    except Unsupported as e:
        result["error"] = str(e)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
