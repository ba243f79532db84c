package storage

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const deletedID = "de1e7ed"

// roomWithAlarm makes room deletedID in dir with a key and an alarm, and
// closes the store, leaving the room's database and its WAL on disk.
func roomWithAlarm(t *testing.T, dir string) {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Room(deletedID, "k", "n")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put("key", []byte("old")); err != nil {
		t.Fatal(err)
	}
	if err := s.IndexAlarm(deletedID, "k", "n", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkDeleted fails t unless room deletedID of s has no file, no record
// and no alarm, and a room made under its id starts empty.
func checkDeleted(t *testing.T, s *Store) {
	t.Helper()
	base := s.path(deletedID)
	for _, p := range []string{base, base + "-wal"} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is still there (%v)", filepath.Base(p), err)
		}
	}
	if _, ok, err := s.Record(deletedID); ok || err != nil {
		t.Errorf("the room's record is still there (%v)", err)
	}
	alarms, err := s.Alarms()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alarms {
		if a.ID == deletedID {
			t.Errorf("the room's alarm is still indexed for %v", a.At)
		}
	}
	r, err := s.Room(deletedID, "k", "n")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := r.Get("key"); ok || err != nil {
		t.Errorf("a room made under the deleted one's id holds %q (%v)", v, err)
	}
}

// TestDeleteCrashChild is den deleting room deletedID, killed by strace
// where TestCrashedDeletionFinishesAtOpen says.
func TestDeleteCrashChild(t *testing.T) {
	dir := os.Getenv("DEN_DELETE_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestCrashedDeletionFinishesAtOpen")
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Delete(deletedID)
	t.Fatalf("not killed; Delete: %v", err)
}

// den killed while it deletes a room, before its database goes or with
// the database gone and the WAL left, finishes the deletion when it opens
// the store again: nothing of the room is left for its alarm to wake.
func TestCrashedDeletionFinishesAtOpen(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace to kill den at an unlink")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []string{"", "-wal"} {
		t.Run("at the unlink of .db"+at, func(t *testing.T) {
			dir := t.TempDir()
			roomWithAlarm(t, dir)
			path := filepath.Join(dir, "rooms", deletedID[:2], deletedID+".db"+at)
			cmd := exec.Command(strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=unlinkat",
				"-e", "inject=unlinkat:signal=SIGKILL", "-P", path,
				exe, "-test.run=^TestDeleteCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "DEN_DELETE_CRASH_DIR="+dir)
			if out, err := cmd.CombinedOutput(); err == nil || strings.Contains(string(out), "not killed") {
				t.Fatalf("den was not killed at the unlink: %v %s", err, out)
			}
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("den was killed after the unlink it was meant to die at: %v", err)
			}
			s, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			checkDeleted(t, s)
		})
	}
}

// A deletion whose files cannot all be removed is finished before the
// room opens again, and then leaves the room made since alone: reopening
// the store does not delete it.
func TestUnfinishedDeletionFinishesBeforeTheRoomOpens(t *testing.T) {
	dir := t.TempDir()
	roomWithAlarm(t, dir)
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// A folder that is not empty cannot be removed as a file.
	blocker := s.path(deletedID) + "-shm"
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(deletedID); err == nil {
		t.Fatal("Delete reported success, but the room's files could not all be removed")
	}
	if _, err := s.Room(deletedID, "k", "n"); err == nil {
		t.Fatal("the room opened with its deletion unfinished")
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	r, err := s.Room(deletedID, "k", "n")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := r.Get("key"); ok || err != nil {
		t.Fatalf("the room opened after its deletion holds %q (%v)", v, err)
	}
	if alarms, err := s.Alarms(); len(alarms) > 0 || err != nil {
		t.Fatalf("the deleted room's alarm is still indexed: %v (%v)", alarms, err)
	}
	if err := r.Put("key", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r, err = s.Room(deletedID, "k", "n"); err != nil {
		t.Fatal(err)
	}
	if v, _, err := r.Get("key"); string(v) != "new" || err != nil {
		t.Fatalf("the room made after the deletion holds %q after a restart (%v), want \"new\"", v, err)
	}
}
