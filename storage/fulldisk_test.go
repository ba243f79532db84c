package storage

import (
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"
)

// On a full disk a room whose WAL is shorter than walKeepBytes (as every
// room's is after an upgrade from a den that did not pad, or after a
// switch from --sync normal, or when a backup removed it) still opens to
// be read: padWAL's zeros are only for speed, and their write failing
// does not fail the open. RLIMIT_FSIZE stands in for the full disk (EFBIG
// where a full disk gives ENOSPC).
func TestFullDiskStillReads(t *testing.T) {
	const env, id = "DEN_FULL_DISK_DIR", "ae03"
	if dir := os.Getenv(env); dir != "" {
		fmt.Println(fullDiskChild(dir, id))
		os.Exit(0)
	}
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir, Synchronous: SyncFull})
	r := openRoom(t, s, id)
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := emptyWAL(s.path(id)); err != nil {
		t.Fatal(err)
	}
	cmd := testChild(t, "TestFullDiskStillReads", env+"="+dir)
	out, _ := cmd.Output()
	if got := strings.TrimSpace(string(out)); got != "ok" {
		t.Fatalf("reading a room with its WAL short on a full disk: %s", got)
	}
}

// emptyWAL checkpoints the room file at path and leaves its WAL
// empty, as a den that did not pad leaves it after a close that
// checkpointed.
func emptyWAL(path string) error {
	db, err := sql.Open("sqlite", fileURI(path))
	if err != nil {
		return err
	}
	_, err = db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.WriteFile(path+"-wal", nil, 0o644)
}

func fullDiskChild(dir, id string) string {
	s, err := Open(Options{Dir: dir, Synchronous: SyncFull})
	if err != nil {
		return "ERR " + err.Error()
	}
	defer s.Close()
	restore, err := limitFileSize(64 << 10)
	if err != nil {
		return "ERR " + err.Error()
	}
	defer restore()
	r, err := s.Room(id, "test", "fulldisk")
	if err != nil {
		return "ERR open: " + err.Error()
	}
	v, ok, err := r.Get("k")
	if err != nil || !ok || string(v) != "v" {
		return fmt.Sprintf("ERR get: %q %v %v", v, ok, err)
	}
	return "ok"
}
