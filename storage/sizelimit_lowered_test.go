package storage

import (
	"fmt"
	"testing"
)

// A room over a limit lowered since it grew past SQLite's page limit for
// the new one: a write that grows it fails its own savepoint, as below
// the limit, and the batch's other savepoints commit. SQLite clamps a
// max_page_count below the file's size to that size, so the first write
// that needed a page hit SQLite's limit, not den's, and took the whole
// transaction with it.
func TestSizeLimitLoweredFailsOnlyItsSavepoint(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir})
	r := openRoom(t, s, "ad06")
	if _, err := r.Exec(`CREATE TABLE t (b)`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(`WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000)
		INSERT INTO t SELECT zeroblob(900) FROM c`); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	opts := Options{Dir: dir, Limits: Limits{MaxDatabaseBytes: 256 << 10, MaxValueBytes: 1000}}
	s = openStore(t, opts)
	r = openRoom(t, s, "ad06")
	overLimitBatch(t, s, r, opts, func() error {
		for i := 0; ; i++ {
			if err := r.Put(fmt.Sprintf("fill%d", i), make([]byte, 900)); err != nil {
				return err
			}
		}
	})
}
