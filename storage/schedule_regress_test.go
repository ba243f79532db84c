package storage

import (
	"testing"
	"time"
)

// den's schedule table keeps no counter in sqlite_sequence, which author
// SQL may write: Schedule cannot be broken through it.
func TestRegressScheduleOutsideSqliteSequence(t *testing.T) {
	r := openRoom(t, openStore(t, Options{}), "aa17")
	now := time.Unix(1000, 0)
	if err := r.Schedule(now, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if c, err := r.Exec(`SELECT name FROM sqlite_sequence`); err == nil && c.RowsRead() > 0 {
		t.Fatalf("den's table in sqlite_sequence: %v", c.All())
	}
	if _, err := r.Exec(`ALTER TABLE _den_schedule RENAME TO mine`); err == nil {
		t.Fatal("an author renamed den's schedule table")
	}
	if err := r.Schedule(now, []byte("b")); err != nil {
		t.Fatal(err)
	}
	es, err := r.TakeDue(now, 10)
	if err != nil || len(es) != 2 || string(es[0].Payload) != "a" || string(es[1].Payload) != "b" {
		t.Fatalf("%v %v", es, err)
	}
}
