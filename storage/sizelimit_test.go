package storage

import (
	"errors"
	"fmt"
	"testing"
)

// A write over the database size limit fails its own savepoint (an event
// of the room's batch) and no more: the transaction's other savepoints
// commit. SQLite's page limit alone would not do: a one-row write that
// reaches it has no statement journal, so SQLite rolls the whole
// transaction back; a statement with one (INSERT ... SELECT) it rolls back
// alone, and the transaction goes on.
func TestSizeLimitFailsOnlyItsSavepoint(t *testing.T) {
	fill := func(r *Room) error {
		for i := 0; ; i++ {
			if err := r.Put(fmt.Sprintf("fill%d", i), make([]byte, 900)); err != nil {
				return err
			}
		}
	}
	for _, c := range []struct {
		name  string
		event func(r *Room) error
	}{
		{"one row a statement", fill},
		{"one statement past the page limit", func(r *Room) error {
			_, err := r.Exec(`WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000)
				INSERT INTO t SELECT zeroblob(900) FROM c`)
			return err
		}},
		{"the error ignored", func(r *Room) error {
			if err := fill(r); !errors.Is(err, ErrLimit) {
				return fmt.Errorf("filling: %w, want a limit error", err)
			}
			return nil
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{Dir: dir, Limits: Limits{MaxDatabaseBytes: 256 << 10, MaxValueBytes: 1000}}
			s := openStore(t, opts)
			r := openRoom(t, s, "ad01")
			if _, err := r.Exec(`CREATE TABLE t (b)`); err != nil {
				t.Fatal(err)
			}
			r = overLimitBatch(t, s, r, opts, func() error { return c.event(r) })
			if cur, err := r.Exec(`SELECT b FROM t`); err != nil || cur.RowsRead() != 0 {
				t.Errorf("t after the commit: %v, want no rows", err)
			}
		})
	}
}

// A room already over a limit lowered since it grew is not refused the
// writes that do not make it larger: taking rows out is how it gets back
// under.
func TestSizeLimitLoweredStillDeletes(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir})
	r := openRoom(t, s, "ad02")
	if _, err := r.Exec(`CREATE TABLE t (b)`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Exec(`WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500)
		INSERT INTO t SELECT zeroblob(900) FROM c`); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r = openRoom(t, openStore(t, Options{Dir: dir, Limits: Limits{MaxDatabaseBytes: 256 << 10, MaxValueBytes: 1000}}), "ad02")
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	if err := r.Transaction(func() error {
		_, err := r.Exec(`DELETE FROM t WHERE rowid <= 250`)
		return err
	}); err != nil {
		t.Fatalf("deleting from a room over its lowered limit: %v", err)
	}
	if err := r.Commit(); err != nil {
		t.Fatal(err)
	}
}

// A write outside a transaction, in one of its own, is held to the limit
// too, though SQLite's page limit is past it.
func TestSizeLimitOwnTransaction(t *testing.T) {
	r := openRoom(t, openStore(t, Options{Limits: Limits{MaxDatabaseBytes: 256 << 10, MaxValueBytes: 1000}}), "ad03")
	if _, err := r.Exec(`CREATE TABLE t (b)`); err != nil {
		t.Fatal(err)
	}
	_, err := r.Exec(`WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300)
		INSERT INTO t SELECT zeroblob(900) FROM c`)
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("300 KiB into a room of 256 KiB: %v, want a limit error", err)
	}
	if cur, err := r.Exec(`SELECT b FROM t`); err != nil || cur.RowsRead() != 0 {
		t.Fatalf("t after the write over the limit: %v, want no rows", err)
	}
}

// A transaction that begins far below the room's limit (more than
// sizeHeadroom) is not checked write by write, for speed: one batch that
// writes past the limit from there may take the room over it, by no more
// than SQLite's page limit lets it. The room is held there from its next
// transaction on: a write that grows it fails, a delete does not.
func TestSizeLimitOvershootIsBoundedAndHeld(t *testing.T) {
	const mib = 1 << 20
	lim := Limits{MaxDatabaseBytes: 66 * mib, MaxValueBytes: mib}
	s := openStore(t, Options{Dir: t.TempDir(), Limits: lim})
	r := openRoom(t, s, "ad05")
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	for i := range 67 {
		if err := r.Put(fmt.Sprintf("k%d", i), make([]byte, mib)); err != nil {
			if !errors.Is(err, ErrLimit) {
				t.Fatal(err)
			}
			break
		}
	}
	if err := r.Commit(); err != nil {
		t.Fatal(err)
	}
	size, err := r.Size()
	if err != nil {
		t.Fatal(err)
	}
	if hard := hardPages(s.limits, r.pageSize) * r.pageSize; size > hard {
		t.Fatalf("the room grew to %d bytes, past SQLite's page limit of %d", size, hard)
	}
	var le *LimitError
	if err := r.Put("more", make([]byte, mib)); !errors.As(err, &le) || le.Limit != "database size" {
		t.Fatalf("a write growing a room of %d bytes, its limit %d: %v, want a database size LimitError", size, lim.MaxDatabaseBytes, err)
	}
	if _, err := r.Delete("k0"); err != nil {
		t.Fatalf("a delete in a room at its limit: %v", err)
	}
}

// overLimitBatch runs a batch of three savepoints in r: a Put of
// "before", event, which must fail with the database size limit, and a
// Put of "after". It commits, closes s, and returns r opened again with
// opts, having checked that before and after were stored and nothing
// of event's fill0.
func overLimitBatch(t *testing.T, s *Store, r *Room, opts Options, event func() error) *Room {
	t.Helper()
	if err := r.Begin(); err != nil {
		t.Fatal(err)
	}
	if err := r.Transaction(func() error { return r.Put("before", []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	err := r.Transaction(event)
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "database size" {
		t.Fatalf("the event over the limit: %v, want a database size LimitError", err)
	}
	if err := r.Transaction(func() error { return r.Put("after", []byte("y")) }); err != nil {
		t.Fatalf("the event after the one over the limit: %v", err)
	}
	if err := r.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r = openRoom(t, openStore(t, opts), r.ID())
	for key, want := range map[string]bool{"before": true, "after": true, "fill0": false} {
		if _, ok, err := r.Get(key); err != nil || ok != want {
			t.Errorf("%s stored: %v %v, want %v", key, ok, err, want)
		}
	}
	return r
}
