package storage

import (
	"database/sql"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// An awake room holds its file: another SQLite user (a sqlite3 shell, a
// backup) can neither read nor write it until the room sleeps.
func TestAwakeRoomFileIsLocked(t *testing.T) {
	s := openStore(t, Options{})
	r := openRoom(t, s, "ab30")
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("sqlite", "file:"+s.path(r.ID())+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var n int
	err = other.QueryRow(`SELECT count(*) FROM _den_kv`).Scan(&n)
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("another connection read an awake room's file: %v", err)
	}
	if err := r.Sleep(); err != nil {
		t.Fatal(err)
	}
	if err := other.QueryRow(`SELECT count(*) FROM _den_kv`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("reading a sleeping room's file: %d rows, %v", n, err)
	}
}

// A file another process keeps for longer than the busy timeout fails the
// open with ErrFileBusy, and the room opens once it is let go.
func TestWakeGivesUpOnBusyFile(t *testing.T) {
	old := busyTimeout
	busyTimeout = 0
	t.Cleanup(func() { busyTimeout = old })
	s := openStore(t, Options{})
	r := openRoom(t, s, "ab31")
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	other := sleepAndHold(t, s, r)
	if err := r.Wake(); !errors.Is(err, ErrFileBusy) {
		t.Fatalf("wake beside a held file: %v, want ErrFileBusy", err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Wake(); err != nil {
		t.Fatal(err)
	}
	if v, _, err := r.Get("k"); err != nil || string(v) != "v" {
		t.Fatalf("after the file was let go k = %q, %v", v, err)
	}
}

// The same from another process: the sqlite3 shell, the tool the README
// names for backups.
func TestShellWaitsForSleep(t *testing.T) {
	shell, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Skip("no sqlite3 shell on this machine")
	}
	s := openStore(t, Options{})
	r := openRoom(t, s, "ab32")
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	query := func() string {
		out, _ := exec.Command(shell, s.path(r.ID()), "SELECT count(*) FROM _den_kv").CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	if out := query(); !strings.Contains(out, "locked") {
		t.Fatalf("the shell on an awake room's file: %q, want it locked", out)
	}
	if err := r.Sleep(); err != nil {
		t.Fatal(err)
	}
	if out := query(); out != "1" {
		t.Fatalf("the shell on a sleeping room's file: %q, want 1", out)
	}
	if v, _, err := r.Get("k"); err != nil || string(v) != "v" {
		t.Fatalf("after the shell k = %q, %v", v, err)
	}
}

// sleepAndHold puts r to sleep and has another connection take its file
// and keep it, as a sqlite3 shell in a transaction would, until closed.
func sleepAndHold(t *testing.T, s *Store, r *Room) *sql.DB {
	t.Helper()
	if err := r.Sleep(); err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("sqlite", "file:"+s.path(r.ID())+"?_pragma=locking_mode(EXCLUSIVE)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	other.SetMaxOpenConns(1)
	var n int // a read takes the lock; exclusive locking mode keeps it
	if err := other.QueryRow(`SELECT count(*) FROM _den_kv`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return other
}

// Open checks that the data folder takes the locks rooms need, and leaves
// nothing of the check behind.
func TestOpenChecksLocksCleanly(t *testing.T) {
	dir := t.TempDir()
	openStore(t, Options{Dir: dir})
	left, err := filepath.Glob(filepath.Join(dir, "rooms", ".lock-check-*"))
	if err != nil || len(left) > 0 {
		t.Fatalf("the lock check left %v (%v)", left, err)
	}
}
