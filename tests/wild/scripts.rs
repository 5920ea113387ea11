//! Every Python script of the suite, in one place. Each is a body run after [`PRELUDE`],
//! so the canonical dump that defines "equal content" is written once and used for sources
//! and destinations alike. [`super::py`] runs them.

/// Shared by every script: the canonical dump and the stop signal of long-running children.
pub const PRELUDE: &str = r#"
import os, random, shutil, signal, sqlite3, sys, time

PARENT = os.getppid()

def stopped():
    # Told to stop by the test, or orphaned because the test process died.
    return os.path.exists(os.environ.get('WILD_STOP', '/nonexistent')) or os.getppid() != PARENT

def say(*words):
    print(*words, flush=True)

def dump(path):
    # One snapshot of everything a plain reader sees: user_version, application_id, the
    # schema (minus root pages, which a rewrite may move), then every table's rows (virtual
    # tables and their shadow tables too), sorted, in ASCII-only repr.
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    con.execute('BEGIN')
    out = []
    out.append('user_version %s' % con.execute('PRAGMA user_version').fetchone()[0])
    out.append('application_id %s' % con.execute('PRAGMA application_id').fetchone()[0])
    schema = con.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall()
    out.extend(sorted('schema ' + ascii(row) for row in schema))
    tables = [r[0] for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    for name in tables:
        rows = con.execute('SELECT * FROM "%s"' % name.replace('"', '""')).fetchall()
        out.append('table %s: %d rows' % (ascii(name), len(rows)))
        out.extend(sorted(ascii(row) for row in rows))
    con.execute('COMMIT')
    con.close()
    return '\n'.join(out)
"#;

/// `dump(path)` on stdout.
pub const DUMP: &str = "sys.stdout.write(dump(sys.argv[1]))";

/// One value of one query (`argv[2]`) on the file `argv[1]`.
pub const SCALAR: &str = r#"
con = sqlite3.connect(sys.argv[1], timeout=60)
sys.stdout.write(str(con.execute(sys.argv[2]).fetchone()[0]))
"#;

/// Whether this Python's SQLite has the virtual table module `argv[1]`.
pub const HAS_MODULE: &str = r#"
con = sqlite3.connect(':memory:')
sql = {'fts5': 'CREATE VIRTUAL TABLE v USING fts5(a)',
       'fts4': 'CREATE VIRTUAL TABLE v USING fts4(a)',
       'rtree': 'CREATE VIRTUAL TABLE v USING rtree(id, x0, x1)'}[sys.argv[1]]
try:
    con.execute(sql)
    say('yes')
except sqlite3.OperationalError as e:
    say('no: %s' % e)
"#;

/// Builds a finished, closed database file `argv[1]` of kind `argv[2]` (`page_size:N`,
/// `utf16le`, `utf16be`, `fts5`, `fts4`, `rtree`, `empty`: the zero-byte file `connect`
/// leaves, `encoding_field:N`: `page_size:4096`'s content with N written into the header's
/// text-encoding field afterwards). Deterministic content.
pub const MAKE_FILE: &str = r#"
path, kind = sys.argv[1], sys.argv[2]
con = sqlite3.connect(path, isolation_level=None)
if kind == 'empty':
    con.close()
    raise SystemExit(0)
# Page size and encoding first: both are fixed once the file has its first page.
if kind.startswith('page_size:'):
    con.execute('PRAGMA page_size=%d' % int(kind.split(':')[1]))
elif kind in ('utf16le', 'utf16be'):
    con.execute("PRAGMA encoding='%s'" % {'utf16le': 'UTF-16le', 'utf16be': 'UTF-16be'}[kind])
con.execute('PRAGMA journal_mode=DELETE')
con.execute('PRAGMA user_version=7')
if kind.startswith(('page_size:', 'encoding_field:')):
    con.execute('CREATE TABLE rows_(id INTEGER PRIMARY KEY, label TEXT NOT NULL, n REAL, b BLOB)')
    con.execute('CREATE INDEX rows_label ON rows_(label)')
    con.execute('BEGIN')
    for i in range(600):
        con.execute('INSERT INTO rows_(label, n, b) VALUES (?, ?, ?)',
                    ('label %04d %s' % (i, 'p' * (i % 300)), i / 7.0, bytes([i % 256]) * (i % 50)))
    con.execute('COMMIT')
    con.execute('DELETE FROM rows_ WHERE id % 5 = 0')
    if kind.startswith('page_size:'):
        got, want = con.execute('PRAGMA page_size').fetchone()[0], int(kind.split(':')[1])
        assert got == want, (got, want)
elif kind in ('utf16le', 'utf16be'):
    con.execute('CREATE TABLE words(id INTEGER PRIMARY KEY, word TEXT NOT NULL, lang TEXT)')
    con.execute('CREATE INDEX words_word ON words(word)')
    con.execute('CREATE VIEW greek AS SELECT word FROM words WHERE lang = \'el\'')
    samples = [('Grüße', 'de'), ('naïve café', 'fr'), ('日本語のテキスト', 'ja'),
               ('Ελληνικά', 'el'), ('emoji 🎉🦀', None), ('Zürich', 'de'), ('ß', 'de'),
               ('Ωμέγα', 'el'), ('한국어', 'ko'), ('ascii', 'en')]
    con.execute('BEGIN')
    for i in range(400):
        word, lang = samples[i % len(samples)]
        con.execute('INSERT INTO words(word, lang) VALUES (?, ?)', ('%s %d' % (word, i), lang))
    con.execute('COMMIT')
    enc = con.execute('PRAGMA encoding').fetchone()[0]
    assert enc.lower().replace('-', '') == kind, enc
elif kind == 'fts5':
    con.execute('CREATE TABLE plain(id INTEGER PRIMARY KEY, v TEXT)')
    con.execute('CREATE VIRTUAL TABLE docs USING fts5(title, body)')
    con.execute('BEGIN')
    for i in range(300):
        con.execute('INSERT INTO docs(title, body) VALUES (?, ?)',
                    ('title %d' % i, ('alpha ' if i % 3 == 0 else 'beta ') + 'word%d ' % i * 5))
        con.execute('INSERT INTO plain(v) VALUES (?)', ('v%d' % i,))
    con.execute('COMMIT')
elif kind == 'fts4':
    con.execute('CREATE TABLE plain(id INTEGER PRIMARY KEY, v TEXT)')
    con.execute('CREATE VIRTUAL TABLE docs USING fts4(title, body)')
    con.execute('BEGIN')
    for i in range(300):
        con.execute('INSERT INTO docs(title, body) VALUES (?, ?)',
                    ('title %d' % i, ('alpha ' if i % 3 == 0 else 'beta ') + 'word%d ' % i * 5))
        con.execute('INSERT INTO plain(v) VALUES (?)', ('v%d' % i,))
    con.execute('COMMIT')
elif kind == 'rtree':
    con.execute('CREATE TABLE plain(id INTEGER PRIMARY KEY, v TEXT)')
    con.execute('CREATE VIRTUAL TABLE boxes USING rtree(id, minx, maxx, miny, maxy)')
    con.execute('BEGIN')
    for i in range(1, 1500):
        x, y = (i * 37) % 1000, (i * 91) % 1000
        con.execute('INSERT INTO boxes VALUES (?, ?, ?, ?, ?)', (i, x, x + 5, y, y + 5))
        con.execute('INSERT INTO plain(v) VALUES (?)', ('v%d' % i,))
    con.execute('COMMIT')
else:
    raise SystemExit('unknown kind ' + kind)
con.close()
if kind.startswith('encoding_field:'):
    with open(path, 'r+b') as f:
        f.seek(56)
        f.write(int(kind.split(':')[1]).to_bytes(4, 'big'))
    enc = sqlite3.connect(path).execute('PRAGMA encoding').fetchone()[0]
    assert enc == 'UTF-8', enc
"#;

/// A writer that dies mid-transaction: commits a table, copies the file to `argv[1].pre`,
/// then rewrites every row with a one-page cache (so changed pages spill into the database
/// file) and SIGKILLs itself, leaving a hot `-journal`.
pub const HOT_JOURNAL: &str = r#"
path = sys.argv[1]
con = sqlite3.connect(path, isolation_level=None)
con.execute('PRAGMA journal_mode=DELETE')
con.execute('CREATE TABLE big(id INTEGER PRIMARY KEY, payload TEXT NOT NULL)')
con.execute('CREATE INDEX big_payload ON big(payload)')
con.execute('BEGIN')
for i in range(3000):
    con.execute('INSERT INTO big(payload) VALUES (?)', ('row %05d %s' % (i, 'x' * 150),))
con.execute('COMMIT')
con.close()
shutil.copyfile(path, path + '.pre')
con = sqlite3.connect(path, isolation_level=None)
con.execute('PRAGMA cache_size=1')
con.execute('BEGIN')
con.execute("UPDATE big SET payload = 'changed ' || payload")
con.execute("DELETE FROM big WHERE id % 3 = 0")
say('dying')
os.kill(os.getpid(), signal.SIGKILL)
"#;

/// A WAL file whose writer keeps its connection open with every change still in `-wal`
/// (`wal_autocheckpoint=0`), until told to stop.
pub const WAL_HOLD: &str = r#"
path = sys.argv[1]
con = sqlite3.connect(path, isolation_level=None)
assert con.execute('PRAGMA journal_mode=WAL').fetchone()[0] == 'wal'
con.execute('PRAGMA wal_autocheckpoint=0')
con.execute('CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER)')
con.execute('CREATE INDEX items_name ON items(name)')
for batch in range(20):
    con.execute('BEGIN')
    for i in range(50):
        con.execute('INSERT INTO items(name, qty) VALUES (?, ?)',
                    ('item %d-%d %s' % (batch, i, 'w' * 80), batch * i))
    con.execute('COMMIT')
con.execute('UPDATE items SET qty = -qty WHERE id % 7 = 0')
con.execute('DELETE FROM items WHERE id % 11 = 0')
say('ready wal_bytes=%d' % os.path.getsize(path + '-wal'))
while not stopped():
    time.sleep(0.01)
con.close()
"#;

/// Money moves between `argv[3]` accounts holding `argv[4]` in total, one transfer per
/// transaction, until told to stop. `argv[2]` is `wal` (with TRUNCATE and PASSIVE
/// checkpoints between transfers) or `delete` (rollback journal). Says `ready` after 20
/// commits and `done commits=.. checkpoints=.. errors=..` at the end.
pub const TRANSFERS: &str = r#"
path, mode, n, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
con = sqlite3.connect(path, timeout=60, isolation_level=None)
if mode == 'wal':
    assert con.execute('PRAGMA journal_mode=WAL').fetchone()[0] == 'wal'
    con.execute('PRAGMA wal_autocheckpoint=0')
else:
    assert con.execute('PRAGMA journal_mode=DELETE').fetchone()[0] == 'delete'
con.execute('CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, memo TEXT NOT NULL)')
con.execute('BEGIN')
for i in range(n):
    con.execute('INSERT INTO accounts(balance, memo) VALUES (?, ?)', (total // n, 'm' * 200))
con.execute('COMMIT')
rng = random.Random(7)
commits = checkpoints = errors = 0
while not stopped():
    a, b, amount = rng.randrange(1, n + 1), rng.randrange(1, n + 1), rng.randrange(1, 100)
    try:
        con.execute('BEGIN IMMEDIATE')
        con.execute('UPDATE accounts SET balance = balance - ?, memo = ? WHERE id = ?',
                    (amount, '%d' % commits * 40, a))
        con.execute('UPDATE accounts SET balance = balance + ? WHERE id = ?', (amount, b))
        con.execute('COMMIT')
        commits += 1
    except sqlite3.OperationalError:
        errors += 1
        if con.in_transaction:
            con.execute('ROLLBACK')
    if commits == 20:
        say('ready')
    if mode == 'wal' and commits % 10 == 0:
        how = 'TRUNCATE' if commits % 20 == 0 else 'PASSIVE'
        con.execute('PRAGMA wal_checkpoint(%s)' % how).fetchall()
        checkpoints += 1
    time.sleep(0.001)
say('done commits=%d checkpoints=%d errors=%d' % (commits, checkpoints, errors))
"#;

/// Builds two complete databases `argv[1]/a.db` and `argv[1]/b.db` (different contents and
/// page sizes), puts A at `argv[2]`, says `ready`, then keeps replacing `argv[2]` by an
/// atomic rename of a fresh copy of B, then A, and so on, until told to stop.
pub const RENAMER: &str = r#"
folder, path = sys.argv[1], sys.argv[2]
def build(name, page_size, rows, word):
    p = os.path.join(folder, name)
    con = sqlite3.connect(p, isolation_level=None)
    con.execute('PRAGMA page_size=%d' % page_size)
    con.execute('CREATE TABLE doc(id INTEGER PRIMARY KEY, body TEXT NOT NULL)')
    con.execute('CREATE TABLE %s_only(x)' % word)
    con.execute('BEGIN')
    for i in range(rows):
        con.execute('INSERT INTO doc(body) VALUES (?)', ('%s %d %s' % (word, i, word[0] * 120),))
    con.execute('COMMIT')
    con.close()
    return p
a, b = build('a.db', 4096, 60, 'alpha'), build('b.db', 1024, 700, 'bravo')
tmp = os.path.join(os.path.dirname(path), '.incoming.tmp')
renames = 0
def put(src):
    global renames
    shutil.copyfile(src, tmp)
    os.rename(tmp, path)
    renames += 1
put(a)
say('ready')
while not stopped():
    put(b if renames % 2 else a)
    time.sleep(0.0005)
say('done renames=%d' % renames)
"#;

/// Tries to take the write lock of `argv[1]` without waiting; says `acquired` or
/// `error: <message>`.
pub const LOCK_PROBE: &str = r#"
con = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    con.execute('BEGIN IMMEDIATE')
    say('acquired')
    con.execute('ROLLBACK')
except sqlite3.OperationalError as e:
    say('error: %s' % e)
"#;
