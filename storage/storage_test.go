package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
)

func openStore(tb testing.TB, opts Options) *Store {
	tb.Helper()
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	s, err := Open(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func openRoom(tb testing.TB, s *Store, id string) *Room {
	tb.Helper()
	r, err := s.Room(id, "test", "name-"+id)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func TestKV(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa01")
	for _, k := range []string{"a", "b", "b/1", "b/2", "b/3", "c", "b%", "b_"} {
		if err := r.Put(k, []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	keys := func(es []Entry) string {
		var ks []string
		for _, e := range es {
			ks = append(ks, e.Key)
		}
		return strings.Join(ks, " ")
	}
	cases := []struct {
		opts ListOptions
		want string
	}{
		{ListOptions{}, "a b b% b/1 b/2 b/3 b_ c"},
		{ListOptions{Prefix: "b/"}, "b/1 b/2 b/3"},
		{ListOptions{Prefix: "b%"}, "b%"},
		{ListOptions{Prefix: "b/", Reverse: true}, "b/3 b/2 b/1"},
		{ListOptions{Prefix: "b/", Limit: 2}, "b/1 b/2"},
		{ListOptions{Prefix: "b/", Limit: 2, Reverse: true}, "b/3 b/2"},
		{ListOptions{Start: "b/2"}, "b/2 b/3 b_ c"},
		{ListOptions{End: "b/"}, "a b b%"},
		{ListOptions{Start: "b/1", End: "b/3"}, "b/1 b/2"},
		{ListOptions{Start: "b", End: "c", Prefix: "b/", Reverse: true, Limit: 1}, "b/3"},
		{ListOptions{Prefix: "zz"}, ""},
	}
	for _, tc := range cases {
		got, err := r.List(tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if keys(got) != tc.want {
			t.Errorf("List(%+v) = %q, want %q", tc.opts, keys(got), tc.want)
		}
	}
	if v, ok, err := r.Get("b/2"); err != nil || !ok || string(v) != "vb/2" {
		t.Fatalf("Get(b/2) = %q %v %v", v, ok, err)
	}
	if _, ok, _ := r.Get("nope"); ok {
		t.Fatal("Get of an unset key reported it set")
	}
	m, err := r.GetMany([]string{"a", "nope", "c"})
	if err != nil || len(m) != 2 || string(m["c"]) != "vc" {
		t.Fatalf("GetMany = %v %v", m, err)
	}
	if n, err := r.DeleteMany([]string{"a", "nope", "c"}); err != nil || n != 2 {
		t.Fatalf("DeleteMany = %d %v, want 2", n, err)
	}
	if ok, err := r.Delete("a"); err != nil || ok {
		t.Fatalf("Delete of a deleted key = %v %v", ok, err)
	}
	if err := r.Put("empty", nil); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := r.Get("empty"); !ok || len(v) != 0 {
		t.Fatalf("an empty value reads back as %q %v", v, ok)
	}
	type doc struct{ N int }
	if err := PutJSON(r, "j", doc{7}); err != nil {
		t.Fatal(err)
	}
	if d, ok, err := GetJSON[doc](r, "j"); err != nil || !ok || d.N != 7 {
		t.Fatalf("GetJSON = %+v %v %v", d, ok, err)
	}
}

func TestLimits(t *testing.T) {
	s := openStore(t, Options{Limits: Limits{MaxDatabaseBytes: 256 << 10, MaxValueBytes: 1000, MaxKeyBytes: 10, MaxBatchKeys: 3}})
	r := openRoom(t, s, "aa02")
	many := []string{"a", "b", "c", "d"}
	entries := []Entry{{"a", nil}, {"b", nil}, {"c", nil}, {"d", nil}}
	_, err1 := r.GetMany(many)
	_, err2 := r.DeleteMany(many)
	cases := []struct {
		name  string
		err   error
		limit string
	}{
		{"long key", r.Put("01234567890", nil), "key size"},
		{"big value", r.Put("k", make([]byte, 1001)), "value size"},
		{"get many", err1, "keys per call"},
		{"delete many", err2, "keys per call"},
		{"put many", r.PutMany(entries), "keys per call"},
	}
	_, err := r.Exec(`CREATE TABLE t (b BLOB)`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Exec(`INSERT INTO t VALUES (?)`, make([]byte, 8000))
	cases = append(cases, struct {
		name  string
		err   error
		limit string
	}{"big SQL value", err, "row size"})
	for i := 0; i < 1000; i++ {
		if _, err = r.Exec(`INSERT INTO t VALUES (zeroblob(900))`); err != nil {
			break
		}
	}
	cases = append(cases, struct {
		name  string
		err   error
		limit string
	}{"full database", err, "database size"})
	for _, tc := range cases {
		var le *LimitError
		if !errors.Is(tc.err, ErrLimit) || !errors.As(tc.err, &le) || le.Limit != tc.limit {
			t.Errorf("%s: err %v, want a LimitError for %q", tc.name, tc.err, tc.limit)
		}
	}
	// The room is still usable after each refusal.
	if err := r.Put("ok", []byte("fine")); err != nil {
		t.Fatalf("after the limits: %v", err)
	}
}

func TestSQL(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa03")
	mustExec := func(q string, args ...any) *Cursor {
		t.Helper()
		c, err := r.Exec(q, args...)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return c
	}
	mustExec(`CREATE TABLE msgs (id INTEGER PRIMARY KEY, text TEXT NOT NULL, score REAL, data BLOB)`)
	c := mustExec(`INSERT INTO msgs (text, score, data) VALUES (?, ?, ?), (?, ?, ?)`, "hi", 1.5, []byte{1}, "yo", nil, nil)
	if c.RowsWritten() != 2 || c.RowsRead() != 0 {
		t.Fatalf("insert: written %d read %d", c.RowsWritten(), c.RowsRead())
	}
	c = mustExec(`SELECT id, text, score, data FROM msgs ORDER BY id`)
	all := c.All()
	if len(all) != 2 || all[0]["text"] != "hi" || all[0]["score"] != 1.5 || !bytes.Equal(all[0]["data"].([]byte), []byte{1}) ||
		all[1]["score"] != nil || all[1]["id"] != int64(2) || c.RowsWritten() != 0 {
		t.Fatalf("select: %v", all)
	}
	if strings.Join(c.Columns(), ",") != "id,text,score,data" {
		t.Fatalf("columns %v", c.Columns())
	}
	if _, err := mustExec(`SELECT text FROM msgs`).One(); !errors.Is(err, ErrManyRows) {
		t.Fatalf("One over two rows: %v", err)
	}
	if _, err := mustExec(`SELECT text FROM msgs WHERE id = 9`).One(); !errors.Is(err, ErrNoRows) {
		t.Fatalf("One over no rows: %v", err)
	}
	if row, err := mustExec(`SELECT count(*) AS n FROM msgs`).One(); err != nil || row["n"] != int64(2) {
		t.Fatalf("count: %v %v", row, err)
	}
	c = mustExec(`UPDATE msgs SET score = 0 RETURNING id`)
	if c.RowsWritten() != 2 || c.RowsRead() != 2 {
		t.Fatalf("update returning: written %d read %d", c.RowsWritten(), c.RowsRead())
	}
	var n int
	for c = mustExec(`SELECT id FROM msgs`); c.Next(); n++ {
		if _, ok := c.Values()[0].(int64); !ok {
			t.Fatalf("id %T", c.Values()[0])
		}
	}
	if n != 2 {
		t.Fatalf("iterated %d rows", n)
	}
	if c := mustExec(`PRAGMA table_info(msgs)`); c.RowsRead() != 4 {
		t.Fatalf("table_info: %d rows", c.RowsRead())
	}

	refused := []struct {
		q    string
		want error
	}{
		{`BEGIN`, ErrTransactionSQL},
		{`COMMIT`, ErrTransactionSQL},
		{`SAVEPOINT x`, ErrTransactionSQL},
		{`RELEASE x`, ErrTransactionSQL},
		{`ROLLBACK`, ErrTransactionSQL},
		{`ATTACH DATABASE '/tmp/x.db' AS x`, ErrTransactionSQL},
		{`PRAGMA journal_mode = DELETE`, ErrTransactionSQL},
		{`PRAGMA synchronous = OFF`, ErrTransactionSQL},
		{`SELECT * FROM _den_kv`, ErrReserved},
		{`DELETE FROM _den_meta`, ErrReserved},
		{`DROP TABLE _den_kv`, ErrReserved},
		{`CREATE TABLE _den_mine (x)`, ErrReserved},
		{`CREATE INDEX i ON _den_kv (value)`, ErrReserved},
		// Raw pages would let SQL rewrite den's records, the epoch among
		// them (the regression test walks through it).
		{`SELECT data FROM sqlite_dbpage WHERE pgno = 1`, ErrReserved},
		{`UPDATE sqlite_dbpage SET data = zeroblob(4096) WHERE pgno = 2`, ErrReserved},
		{`CREATE VIRTUAL TABLE pages USING sqlite_dbpage`, ErrReserved},
	}
	for _, tc := range refused {
		if _, err := r.Exec(tc.q); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.q, err, tc.want)
		}
	}
	if _, err := r.Exec(`SELECT nope FROM msgs`); err == nil {
		t.Fatal("bad SQL gave no error")
	}
	if c := mustExec(`SELECT count(*) AS n FROM msgs`); c.All()[0]["n"] != int64(2) {
		t.Fatal("the refusals changed the table")
	}
}

func TestTransactions(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa04")
	get := func(k string) string {
		v, _, err := r.Get(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	boom := errors.New("boom")
	err := r.Transaction(func() error {
		_ = r.Put("a", []byte("1"))
		inner := r.Transaction(func() error {
			_ = r.Put("b", []byte("2"))
			return boom
		})
		if !errors.Is(inner, boom) {
			t.Errorf("inner transaction: %v", inner)
		}
		_ = r.Transaction(func() error { return r.Put("c", []byte("3")) })
		return nil
	})
	if err != nil || get("a") != "1" || get("b") != "" || get("c") != "3" {
		t.Fatalf("nested: err %v a=%q b=%q c=%q; want the failed inner one alone rolled back", err, get("a"), get("b"), get("c"))
	}
	if err := r.Transaction(func() error { _ = r.Put("d", []byte("4")); return boom }); !errors.Is(err, boom) || get("d") != "" {
		t.Fatalf("failed transaction: err %v d=%q", err, get("d"))
	}
	func() {
		defer func() {
			if p := recover(); p != "oops" {
				t.Fatalf("recovered %v, want the panic to go on", p)
			}
		}()
		_ = r.Transaction(func() error {
			_ = r.Put("e", []byte("5"))
			panic("oops")
		})
	}()
	if get("e") != "" {
		t.Fatal("a panicking transaction left its write")
	}

	// The event loop's shape: one transaction, an event per savepoint.
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	_ = r.Transaction(func() error { return r.Put("ev1", []byte("x")) })
	_ = r.Transaction(func() error { _ = r.Put("ev2", []byte("x")); return boom })
	if _, err := r.Exec(`CREATE TABLE t (x)`); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(); err != nil {
		t.Fatal(err)
	}
	if get("ev1") != "x" || get("ev2") != "" {
		t.Fatal("a failed event's savepoint was not rolled back alone")
	}
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	_ = r.Put("gone", []byte("x"))
	if err := r.Rollback(); err != nil || get("gone") != "" {
		t.Fatalf("rollback: %v", err)
	}
}

func TestDeleteAll(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa05")
	for _, q := range []string{`CREATE TABLE a (x)`, `CREATE TABLE "b c" (y)`, `CREATE INDEX ai ON a (x)`,
		`CREATE VIEW v AS SELECT x FROM a`, `CREATE TRIGGER tr AFTER INSERT ON a BEGIN INSERT INTO "b c" VALUES (new.x); END`,
		`INSERT INTO a VALUES (1)`} {
		if _, err := r.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	_ = r.Put("k", []byte("v"))
	if err := r.Transaction(func() error {
		if err := r.DeleteAll(); err != nil {
			return err
		}
		return errors.New("changed my mind")
	}); err == nil {
		t.Fatal("want the error back")
	}
	if c, _ := r.Exec(`SELECT count(*) AS n FROM a`); c == nil || c.All()[0]["n"] != int64(1) {
		t.Fatal("DeleteAll inside a failed transaction was not rolled back")
	}
	if err := r.DeleteAll(); err != nil {
		t.Fatal(err)
	}
	c, err := r.Exec(`SELECT name FROM sqlite_schema WHERE name NOT LIKE '\_den\_%' ESCAPE '\'`)
	if err != nil || c.RowsRead() != 0 {
		t.Fatalf("after DeleteAll the schema has %v (%v)", c.All(), err)
	}
	if es, _ := r.List(ListOptions{}); len(es) != 0 {
		t.Fatalf("after DeleteAll KV holds %v", es)
	}
	if err := r.Put("again", []byte("v")); err != nil {
		t.Fatalf("the room is unusable after DeleteAll: %v", err)
	}
}

func TestEpochFencing(t *testing.T) {
	s := openStore(t, Options{})
	r := openRoom(t, s, "aa06")
	if err := r.Claim(5); err != nil {
		t.Fatal(err)
	}
	if err := r.Put("k", []byte("owner 5")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(`CREATE TABLE t (x)`); err != nil {
		t.Fatal(err)
	}
	// A handle still under an older epoch, as a node that lost its lease
	// would hold.
	r.SetEpoch(4)
	exec := func(q string) error { _, err := r.Exec(q); return err }
	for name, err := range map[string]error{
		"put":    r.Put("k", []byte("owner 4")),
		"create": exec(`CREATE TABLE u (x)`),
		"insert": exec(`INSERT INTO t VALUES (1)`),
		// Outside a transaction a read runs in none; a write behind it
		// in the same text must not ride along.
		"script": exec(`SELECT 1; INSERT INTO t VALUES (2)`),
		"begin":  r.Begin(),
		"claim":  r.Claim(3),
	} {
		if !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("%s under a stale epoch: %v, want ErrStaleEpoch", name, err)
		}
	}
	if v, _, _ := r.Get("k"); string(v) != "owner 5" {
		t.Fatalf("k = %q: a stale write went through", v)
	}
	// Reads are not fenced, by SQL as by KV.
	if c, err := r.Exec(`SELECT count(*) AS n FROM t`); err != nil || c.All()[0]["n"] != int64(0) {
		t.Fatalf("a read under a stale epoch: %v; or a stale insert went through", err)
	}
	if e, err := r.Epoch(); err != nil || e != 5 {
		t.Fatalf("epoch %d %v", e, err)
	}
	if err := r.Claim(6); err != nil {
		t.Fatalf("a newer owner's claim: %v", err)
	}
}

// FTS5 reads PRAGMA data_version on the room's connection; with the
// pragma refused, no full-text table could take a row.
func TestFullTextSearch(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa0c")
	for _, q := range []string{
		`CREATE VIRTUAL TABLE notes USING fts5(body)`,
		`INSERT INTO notes (body) VALUES ('hello world'), ('goodbye moon')`,
	} {
		if _, err := r.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	match := func() []map[string]any {
		c, err := r.Exec(`SELECT body FROM notes WHERE notes MATCH 'hello'`)
		if err != nil {
			t.Fatal(err)
		}
		return c.All()
	}
	if got := match(); len(got) != 1 || got[0]["body"] != "hello world" {
		t.Fatalf("MATCH 'hello' outside a transaction = %v", got)
	}
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(`INSERT INTO notes (body) VALUES ('hello again')`); err != nil {
		t.Fatal(err)
	}
	if got := match(); len(got) != 2 {
		t.Fatalf("MATCH 'hello' inside the transaction = %v", got)
	}
	if err := r.Commit(); err != nil {
		t.Fatal(err)
	}
}

// A wake skips the checks a first open makes; a room whose file went
// away while it slept (deleted by hand, say) still wakes, as a new room.
func TestWakeAfterFileRemoved(t *testing.T) {
	s := openStore(t, Options{})
	r := openRoom(t, s, "aa0b")
	if _, err := r.Exec(`CREATE TABLE t (x)`); err != nil {
		t.Fatal(err)
	}
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := r.Sleep(); err != nil {
		t.Fatal(err)
	}
	path := s.path(r.ID())
	for _, p := range []string{path, path + "-wal"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := r.Wake(); err != nil {
		t.Fatalf("wake after the file went: %v", err)
	}
	if _, ok, err := r.Get("k"); err != nil || ok {
		t.Fatalf("Get = found %v, %v; want a new, empty room", ok, err)
	}
	if err := r.Put("k", []byte("again")); err != nil {
		t.Fatalf("the new room takes no writes: %v", err)
	}
	if _, err := r.Exec(`CREATE TABLE t (x)`); err != nil {
		t.Fatalf("the new room has the old one's table: %v", err)
	}
}

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir})
	r := openRoom(t, s, "aa07")
	if _, err := r.Exec(`CREATE TABLE t (x)`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(`INSERT INTO t VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	_ = r.Put("k", []byte("v"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, Options{Dir: dir})
	r2 := openRoom(t, s2, "aa07")
	if c, err := r2.Exec(`SELECT x FROM t`); err != nil || c.All()[0]["x"] != int64(42) {
		t.Fatalf("after restart: %v", err)
	}
	if v, _, _ := r2.Get("k"); string(v) != "v" {
		t.Fatal("KV lost in restart")
	}
	recs, err := s2.Rooms("test")
	if err != nil || len(recs) != 1 || recs[0].ID != "aa07" || recs[0].Name != "name-aa07" || recs[0].Bytes == 0 {
		t.Fatalf("node.db rooms %+v %v", recs, err)
	}
	if _, ok, _ := s2.Record("ffff"); ok {
		t.Fatal("a record for a room never created")
	}
	if err := s2.Delete("aa07"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s2.Record("aa07"); ok {
		t.Fatal("Delete left the record")
	}
	if _, err := os.Stat(s2.path("aa07")); !os.IsNotExist(err) {
		t.Fatalf("Delete left the file: %v", err)
	}
}

// TestHandlePool opens more rooms than the pool holds: handles are given
// up least recently used first, a room in a transaction keeps its handle,
// every room still works, and the descriptors stay bounded.
func TestHandlePool(t *testing.T) {
	s := openStore(t, Options{MaxOpen: 4})
	base := openFiles(t)
	var rooms []*Room
	for i := range 40 {
		r := openRoom(t, s, fmt.Sprintf("b%03d", i))
		if err := r.Put("n", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		rooms = append(rooms, r)
		if s.OpenHandles() > 4 {
			t.Fatalf("%d handles open, pool of 4", s.OpenHandles())
		}
	}
	if got := openFiles(t) - base; got > 4*2 {
		t.Fatalf("%d more descriptors with 4 handles: want at most 2 each", got)
	}
	busy := rooms[0]
	if err := busy.Begin(); err != nil {
		t.Fatal(err)
	}
	_ = busy.Put("in-tx", []byte("x"))
	for _, r := range rooms[1:] {
		if v, _, err := r.Get("n"); err != nil || len(v) == 0 {
			t.Fatalf("room %s after its handle was given up: %q %v", r.ID(), v, err)
		}
	}
	if err := busy.Commit(); err != nil {
		t.Fatalf("the room in a transaction lost its handle: %v", err)
	}
	if v, _, _ := busy.Get("in-tx"); string(v) != "x" {
		t.Fatal("the transaction's write is gone")
	}
}

func openFiles(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

func TestBadOptions(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Fatal("no Dir must be an error")
	}
	if _, err := Open(Options{Dir: t.TempDir(), Synchronous: "off"}); err == nil || !strings.Contains(err.Error(), "synchronous") {
		t.Fatalf("synchronous off: %v", err)
	}
}
