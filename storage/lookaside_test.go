package storage

import (
	"encoding/binary"
	"fmt"
	"testing"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// A room's connection has the smaller lookaside pool: however busy its
// statements keep it, no more of its slots are ever in use than the pool
// has. SQLite's default pool has 123 slots, which this workload (a wide
// table, an index, a join) goes past.
func TestLookasideIsSmall(t *testing.T) {
	if err := TuningError(); err != nil {
		t.Fatal(err)
	}
	r := openRoom(t, openStore(t, Options{Dir: t.TempDir()}), "aa01")
	cols := ""
	for i := range 60 {
		cols += fmt.Sprintf(", c%d TEXT DEFAULT 'x%d' CHECK (length(c%d) < 100)", i, i, i)
	}
	for _, q := range []string{
		"CREATE TABLE wide (id INTEGER PRIMARY KEY" + cols + ")",
		"CREATE INDEX wide_c1 ON wide (c1, c2, c3)",
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) INSERT INTO wide (id) SELECT i FROM n",
		"SELECT a.c1, b.c59, count(*) FROM wide a JOIN wide b ON a.c1 = b.c1 WHERE a.id IN (SELECT id FROM wide WHERE c2 LIKE 'x%') GROUP BY 1, 2 ORDER BY 3",
	} {
		if _, err := r.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var used, most int32
	if err := r.acquire(); err != nil {
		t.Fatal(err)
	}
	err := r.conn.Raw(func(dc any) error {
		db, tls, err := sqliteHandle(dc)
		if err != nil {
			return err
		}
		p := libc.Xmalloc(tls, 8)
		defer libc.Xfree(tls, p)
		if rc := sqlite3.Xsqlite3_db_status(tls, db, sqlite3.SQLITE_DBSTATUS_LOOKASIDE_USED, p, p+4, 0); rc != sqlite3.SQLITE_OK {
			return fmt.Errorf("sqlite3_db_status: %d", rc)
		}
		b := libc.GoBytes(p, 8)
		used, most = int32(binary.NativeEndian.Uint32(b)), int32(binary.NativeEndian.Uint32(b[4:]))
		return nil
	})
	r.releaseHandle()
	if err != nil {
		t.Fatal(err)
	}
	// 7 slots of 1,200 bytes and 28 of 128.
	const slots = 35
	if most == 0 || most > slots {
		t.Errorf("lookaside slots in use at most %d (now %d), want 1 to %d", most, used, slots)
	}
}
