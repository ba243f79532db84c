package storage

import (
	"testing"
	"time"
)

// A room is Empty while nothing it stores must outlive its file: tables
// without rows are schema, but a row anywhere, den's records included,
// keeps it.
func TestEmpty(t *testing.T) {
	cases := []struct {
		name  string
		empty bool
		write func(r *Room) error
	}{
		{"new", true, func(*Room) error { return nil }},
		{"a table without rows", true, func(r *Room) error {
			_, err := r.Exec(`CREATE TABLE m (id INTEGER PRIMARY KEY, text TEXT)`)
			return err
		}},
		{"a full-text table without rows", true, func(r *Room) error {
			_, err := r.Exec(`CREATE VIRTUAL TABLE ft USING fts5(body)`)
			return err
		}},
		{"a view and a trigger", true, func(r *Room) error {
			_, err := r.Exec(`CREATE TABLE m (x)`)
			if err == nil {
				_, err = r.Exec(`CREATE VIEW v AS SELECT x FROM m`)
			}
			if err == nil {
				_, err = r.Exec(`CREATE TRIGGER tr AFTER INSERT ON m BEGIN SELECT 1; END`)
			}
			return err
		}},
		{"a row", false, func(r *Room) error {
			_, err := r.Exec(`CREATE TABLE m (x)`)
			if err == nil {
				_, err = r.Exec(`INSERT INTO m VALUES (1)`)
			}
			return err
		}},
		{"a full-text row", false, func(r *Room) error {
			_, err := r.Exec(`CREATE VIRTUAL TABLE ft USING fts5(body)`)
			if err == nil {
				_, err = r.Exec(`INSERT INTO ft VALUES ('hello')`)
			}
			return err
		}},
		{"an AUTOINCREMENT counter", false, func(r *Room) error {
			_, err := r.Exec(`CREATE TABLE m (id INTEGER PRIMARY KEY AUTOINCREMENT, x)`)
			if err == nil {
				_, err = r.Exec(`INSERT INTO m (x) VALUES (1)`)
			}
			if err == nil {
				_, err = r.Exec(`DELETE FROM m`)
			}
			return err
		}},
		{"a KV entry", false, func(r *Room) error { return r.Put("k", nil) }},
		{"an alarm", false, func(r *Room) error { return r.SetAlarm(time.Now().Add(time.Hour), 0) }},
		{"a scheduled event", false, func(r *Room) error { return r.Schedule(time.Now().Add(time.Hour), []byte("p")) }},
		{"a claimed epoch", false, func(r *Room) error { return r.Claim(1) }},
		{"a KV entry deleted", true, func(r *Room) error {
			if err := r.Put("k", []byte("v")); err != nil {
				return err
			}
			_, err := r.Delete("k")
			return err
		}},
	}
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, tc := range cases {
		r, err := s.Room("e"+string(rune('a'+i)), "k", tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := tc.write(r); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// From a fresh open too: SQLite learns which tables are shadow
		// tables from the schema it loads.
		for _, when := range []string{"open", "reopened"} {
			if empty, err := r.Empty(); err != nil || empty != tc.empty {
				t.Errorf("%s, %s: Empty %v (%v), want %v", tc.name, when, empty, err, tc.empty)
			}
			if err := r.Sleep(); err != nil {
				t.Fatal(err)
			}
		}
	}
}
