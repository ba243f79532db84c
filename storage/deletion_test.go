package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	reopenDeleted(t, s)
}

// reopenDeleted opens room deletedID of s again, which finishes its
// deletion if it is unfinished, and fails t unless it starts empty and
// its alarm is gone from the index.
func reopenDeleted(t *testing.T, s *Store) *Room {
	t.Helper()
	r, err := s.Room(deletedID, "k", "n")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := r.Get("key"); ok || err != nil {
		t.Errorf("a room made under the deleted one's id holds %q (%v)", v, err)
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
	return r
}

// TestDeleteCrashChild is den deleting room deletedID, killed by strace
// where TestCrashedDeletionFinishesAtOpen says.
func TestDeleteCrashChild(t *testing.T) {
	dir := os.Getenv("DEN_DELETE_CRASH_DIR")
	if dir == "" {
		t.Skip("run by the crash tests of deletions")
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
	for _, at := range []string{"", "-wal"} {
		t.Run("at the unlink of .db"+at, func(t *testing.T) {
			dir := t.TempDir()
			roomWithAlarm(t, dir)
			path := filepath.Join(dir, "rooms", deletedID[:2], deletedID+".db"+at)
			cmd := straceChild(t, "TestDeleteCrashChild", []string{"DEN_DELETE_CRASH_DIR=" + dir},
				"-o", "/dev/null", "-e", "trace=unlinkat", "-e", "inject=unlinkat:signal=SIGKILL", "-P", path)
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

// unfinishedDeletion opens a store in dir whose deletion of room
// deletedID failed, and returns it with a func that takes away what made
// the deletion fail.
func unfinishedDeletion(t *testing.T, dir string) (*Store, func()) {
	t.Helper()
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
	return s, func() {
		if err := os.RemoveAll(blocker); err != nil {
			t.Fatal(err)
		}
	}
}

// A deletion whose files cannot all be removed is finished before the
// room opens again, and then leaves the room made since alone: reopening
// the store does not delete it.
func TestUnfinishedDeletionFinishesBeforeTheRoomOpens(t *testing.T) {
	dir := t.TempDir()
	s, unblock := unfinishedDeletion(t, dir)
	if _, err := s.Room(deletedID, "k", "n"); err == nil {
		t.Fatal("the room opened with its deletion unfinished")
	}
	if !s.Deleting(deletedID) {
		t.Error("Deleting is false for a room whose deletion failed")
	}
	unblock()
	r := reopenDeleted(t, s)
	if s.Deleting(deletedID) {
		t.Error("Deleting is still true after the deletion finished")
	}
	if err := r.Put("key", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
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

// A deletion waits in s.unfinished; the store is closed: Room then says
// so, and does not go on with the deletion after Close.
func TestRoomOnAClosedStoreLeavesAnUnfinishedDeletion(t *testing.T) {
	s, unblock := unfinishedDeletion(t, t.TempDir())
	unblock()
	left := s.path(deletedID) + "-wal"
	if err := os.WriteFile(left, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Room(deletedID, "k", "n"); !errors.Is(err, ErrClosed) {
		t.Errorf("Room on a closed store: %v, want ErrClosed", err)
	}
	if _, err := os.Stat(left); err != nil {
		t.Errorf("the closed store went on removing files: %v", err)
	}
}

// An id too short to name a room's files, or naming files outside the
// room's folder, is refused before anything is recorded, so that the
// store still opens after.
func TestDeleteRefusesABadID(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "../../x", "..x", "ab/c"} {
		if err := s.Delete(id); err == nil {
			t.Errorf("Delete of id %q reported success", id)
		}
		if _, err := s.Room(id, "k", "n"); err == nil {
			t.Errorf("Room of id %q opened", id)
		}
	}
	s.Close()
	if s, err = Open(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestCloseDeletionChild holds a Delete (strace delays its first unlink
// of the room's database), closes the store meanwhile, opens it again and
// makes the room anew: the Delete must not take the new room's file.
func TestCloseDeletionChild(t *testing.T) {
	dir := os.Getenv("DEN_CLOSE_DELETION_DIR")
	if dir == "" {
		t.Skip("run by TestCloseWaitsForADeletionInFlight")
	}
	path := filepath.Join(dir, "rooms", deletedID[:2], deletedID+".db")
	// strace delays the first unlink of path each thread makes: this
	// thread makes one that removes nothing (ENOTDIR), so that of the
	// test's own only the Delete's, on its own thread, is held.
	runtime.LockOSThread()
	if err := unix.Unlinkat(unix.AT_FDCWD, path, unix.AT_REMOVEDIR); !errors.Is(err, unix.ENOTDIR) {
		t.Fatalf("the unlink that spends this thread's delay: %v", err)
	}
	s1, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- s1.Delete(deletedID)
	}()
	for deadline := time.Now().Add(10 * time.Second); !inUnlinkat(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the Delete never came to its unlink")
		}
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("the Delete Close waited for failed: %v", err)
	}
	s2, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	r, err := s2.Room(deletedID, "k", "n")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put("key", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the room made after the store closed lost its file: %v", err)
	}
}

// inUnlinkat reports whether a thread of this process is in unlinkat.
func inUnlinkat() bool {
	tasks, _ := filepath.Glob("/proc/self/task/*/syscall")
	for _, f := range tasks {
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(b), fmt.Sprint(unix.SYS_UNLINKAT)+" ") {
			return true
		}
	}
	return false
}

// Close waits for a deletion in flight: a Delete left running after it
// would remove the files of the room a new Store made under its id.
func TestCloseWaitsForADeletionInFlight(t *testing.T) {
	dir := t.TempDir()
	roomWithAlarm(t, dir)
	path := filepath.Join(dir, "rooms", deletedID[:2], deletedID+".db")
	cmd := straceChild(t, "TestCloseDeletionChild", []string{"DEN_CLOSE_DELETION_DIR=" + dir},
		"-o", "/dev/null", "-e", "trace=unlinkat", "-e", "inject=unlinkat:delay_enter=1000000:when=1", "-P", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// traceChild runs the test func child under strace with env, tracing
// calls with descriptors shown as paths, and returns the trace's lines.
func traceChild(t *testing.T, child string, env []string, calls ...string) []string {
	t.Helper()
	log := filepath.Join(t.TempDir(), "strace.log")
	cmd := straceChild(t, child, env, append([]string{"-y", "-s", "0", "-o", log}, calls...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(b), "\n")
}

// In either sync mode a power cut at any point of a deletion leaves the
// room whole or its deletion recorded, and never takes a room made anew
// after it: the commit that records the deletion is synced before the
// room's database is unlinked, the unlinks are synced before the commit
// that clears the deletion, and that commit is synced before the room's
// new file is made.
func TestDeletionSyncsInOrder(t *testing.T) {
	for _, mode := range []string{SyncNormal, SyncFull} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			roomWithAlarm(t, dir)
			lines := traceChild(t, "TestRemakeChild",
				[]string{"DEN_REMAKE_DIR=" + dir, "DEN_REMAKE_SYNC=" + mode},
				"-e", "trace=unlinkat,fsync,fdatasync,pwrite64,rename,renameat,renameat2")
			folder := filepath.Join(dir, "rooms", deletedID[:2])
			// What happened, in order: w a commit to node.db, S a sync of
			// node.db's WAL, F a sync of the room's folder, u the unlink of
			// a file of the room, m its new file renamed into place.
			var seq strings.Builder
			for _, l := range lines {
				switch {
				case strings.Contains(l, "pwrite64(") && strings.Contains(l, "node.db-wal>"):
					seq.WriteByte('w')
				case strings.Contains(l, "sync(") && strings.Contains(l, "node.db-wal>"):
					seq.WriteByte('S')
				case strings.Contains(l, "sync(") && strings.Contains(l, "<"+folder+">"):
					seq.WriteByte('F')
				case strings.Contains(l, "unlinkat(") && strings.Contains(l, deletedID+".db") && !strings.Contains(l, "ENOENT"):
					seq.WriteByte('u')
				case strings.Contains(l, "rename") && strings.Contains(l, deletedID+".db.new"):
					seq.WriteByte('m')
				}
			}
			got := seq.String()
			first, last, made := strings.IndexByte(got, 'u'), strings.LastIndexByte(got, 'u'), strings.LastIndexByte(got, 'm')
			if first < 0 || made < last {
				t.Fatalf("no unlink of the room's files, or no new file after them: %q", got)
			}
			before, after := got[:first], got[last+1:made]
			const key = "(w commit to node.db, S its sync, F sync of the room's folder, u unlink, m new file)"
			if i := strings.LastIndexByte(before, 'w'); i < 0 || !strings.Contains(before[i:], "S") {
				t.Errorf("the commit recording the deletion is not synced before the first unlink %s: %q", key, got)
			}
			clear := strings.IndexByte(after, 'w')
			if clear < 0 || !strings.Contains(after[:clear], "F") {
				t.Errorf("the unlinks are not synced before the commit clearing the deletion %s: %q", key, got)
			}
			if clear >= 0 && !strings.Contains(after[clear:], "S") {
				t.Errorf("the commit clearing the deletion is not synced before the room's new file %s: %q", key, got)
			}
		})
	}
}

// Deleting a room that never had a file, in a folder never made, is done
// at once: the room opens after it.
func TestDeleteOfARoomWithoutFiles(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Delete(deletedID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Room(deletedID, "k", "n"); err != nil {
		t.Fatal(err)
	}
}

// A deletion Open cannot finish is reported, for den to log, and is
// finished once what blocked it is gone.
func TestOpenReportsAnUnfinishedDeletion(t *testing.T) {
	dir := t.TempDir()
	s, unblock := unfinishedDeletion(t, dir)
	if err := s.UnfinishedDeletions(); err != nil {
		t.Errorf("a deletion that failed after Open is reported as Open's: %v", err)
	}
	s.Close()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	err = s.UnfinishedDeletions()
	s.Close()
	if err == nil || !strings.Contains(err.Error(), deletedID) {
		t.Errorf("UnfinishedDeletions: %v, want the deletion of %s", err, deletedID)
	}
	unblock()
	if s, err = Open(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.UnfinishedDeletions(); err != nil {
		t.Errorf("the deletion was not finished once it could be: %v", err)
	}
	checkDeleted(t, s)
}

// A Delete whose commit recording the deletion fails (a trigger refuses
// it here, as a full disk or an I/O error would) has removed nothing, and
// the Room that tries again records the deletion before any file goes:
// it ends with the room's alarm unindexed, as a deletion does.
func TestRetriedDeletionIsRecordedFirst(t *testing.T) {
	dir := t.TempDir()
	roomWithAlarm(t, dir)
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.node.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON deletions
		BEGIN SELECT RAISE(ABORT, 'the disk is full'); END`); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(deletedID); err == nil {
		t.Fatal("Delete reported success with its record refused")
	}
	if _, err := os.Stat(s.path(deletedID)); err != nil {
		t.Fatalf("a file went with the deletion not recorded: %v", err)
	}
	if _, err := s.node.Exec(`DROP TRIGGER refuse`); err != nil {
		t.Fatal(err)
	}
	reopenDeleted(t, s)
}

// TestFailedSyncChild deletes room deletedID with SyncNormal, where strace
// fails the sync of the deletion's record, then opens the room.
func TestFailedSyncChild(t *testing.T) {
	dir := os.Getenv("DEN_FAILED_SYNC_DIR")
	if dir == "" {
		t.Skip("run by TestRetriedDeletionSyncsItsRecordFirst")
	}
	// strace counts calls per thread: on one thread, only the first
	// fsync fails, not the first of each thread the syncs run on.
	runtime.LockOSThread()
	s, err := Open(Options{Dir: dir, Synchronous: SyncNormal})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(deletedID); err == nil {
		t.Fatal("Delete reported success with the sync of its record failed")
	}
	if _, err := s.Room(deletedID, "k", "n"); err != nil {
		t.Fatal(err)
	}
	os.Exit(0)
}

// With SyncNormal, a Delete whose sync of its record fails unlinks
// nothing, and the Room that tries again syncs the record before its
// first unlink.
func TestRetriedDeletionSyncsItsRecordFirst(t *testing.T) {
	dir := t.TempDir()
	roomWithAlarm(t, dir)
	wal := filepath.Join(dir, "node.db-wal")
	// fsync, not fdatasync: SQLite's own syncs are fdatasyncs, so the
	// first fsync of node.db's WAL is the deletion's.
	lines := traceChild(t, "TestFailedSyncChild", []string{"DEN_FAILED_SYNC_DIR=" + dir},
		"-e", "trace=fsync,fdatasync,unlinkat", "-e", "inject=fsync:error=EIO:when=1",
		"-P", wal, "-P", filepath.Join(dir, "rooms", deletedID[:2], deletedID+".db"))
	// E the failed sync of node.db's WAL, S one that succeeded, u the
	// unlink of the room's database.
	var seq strings.Builder
	for _, l := range lines {
		switch {
		case strings.Contains(l, "sync(") && strings.Contains(l, "<"+wal+">") && strings.Contains(l, "EIO"):
			seq.WriteByte('E')
		case strings.Contains(l, "sync(") && strings.Contains(l, "<"+wal+">"):
			seq.WriteByte('S')
		case strings.Contains(l, "unlinkat(") && !strings.Contains(l, "ENOENT"):
			seq.WriteByte('u')
		}
	}
	got := seq.String()
	e, u := strings.IndexByte(got, 'E'), strings.IndexByte(got, 'u')
	if e < 0 || u < e {
		t.Fatalf("want the failed sync, then the unlink (E failed sync, S sync, u unlink): %q", got)
	}
	if !strings.Contains(got[e:u], "S") {
		t.Errorf("the room's database was unlinked with the record of its deletion never synced (E failed sync, S sync, u unlink): %q", got)
	}
}

// TestRemakeChild deletes room deletedID, in the sync mode
// DEN_REMAKE_SYNC says, makes it anew with a value that takes its WAL past
// walKeepBytes, and puts it to sleep, which checkpoints and so syncs the
// new value into its database; then it exits without closing the store,
// as den killed or a power cut would leave it.
func TestRemakeChild(t *testing.T) {
	dir := os.Getenv("DEN_REMAKE_DIR")
	if dir == "" {
		t.Skip("run by TestDeletionSyncsInOrder and TestPowerCutKeepsTheRoomMadeAnew")
	}
	s, err := Open(Options{Dir: dir, Synchronous: os.Getenv("DEN_REMAKE_SYNC")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(deletedID); err != nil {
		t.Fatal(err)
	}
	r, err := s.Room(deletedID, "k", "n")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put("key", append([]byte("new"), make([]byte, 2*walKeepBytes)...)); err != nil {
		t.Fatal(err)
	}
	if err := r.Sleep(); err != nil {
		t.Fatal(err)
	}
	os.Exit(0)
}

var pwriteRE = regexp.MustCompile(`pwrite64\(\d+<([^>]*)>, .*, (\d+), (\d+)\) = (\d+)`)

// A power cut after a room was deleted and made anew, with SyncNormal,
// loses at most node.db's commits since its last sync, and must not take
// the new room, whose data its checkpoint synced. The cut is played by
// cutting node.db's WAL back to what was written of it by its last sync.
func TestPowerCutKeepsTheRoomMadeAnew(t *testing.T) {
	dir := t.TempDir()
	roomWithAlarm(t, dir)
	lines := traceChild(t, "TestRemakeChild", []string{"DEN_REMAKE_DIR=" + dir, "DEN_REMAKE_SYNC=" + SyncNormal},
		"-e", "trace=fsync,fdatasync,pwrite64")
	wal := filepath.Join(dir, "node.db-wal")
	var synced, written int64
	roomSynced := false
	for _, l := range lines {
		if m := pwriteRE.FindStringSubmatch(l); m != nil {
			if m[1] == filepath.Join(dir, "node.db") {
				t.Fatal("node.db was checkpointed: cutting its WAL would not play a power cut")
			}
			if m[1] == wal {
				n, _ := strconv.ParseInt(m[2], 10, 64)
				off, _ := strconv.ParseInt(m[3], 10, 64)
				written = max(written, off+n)
			}
		}
		if strings.Contains(l, "sync(") && strings.Contains(l, "<"+wal+">") {
			synced = written
		}
		if strings.Contains(l, "sync(") && strings.Contains(l, deletedID+".db>") {
			roomSynced = true
		}
	}
	if !roomSynced {
		t.Fatal("the new room's database was never synced, so a power cut could rightly lose it")
	}
	if err := os.Truncate(wal, synced); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: dir, Synchronous: SyncNormal})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Room(deletedID, "k", "n")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := r.Get("key"); !ok || err != nil || !strings.HasPrefix(string(v), "new") {
		t.Fatalf("after the power cut the room made anew holds %.10q (%v, %v), want \"new...\"", v, ok, err)
	}
}

// den killed as it records a deletion, before the commit is written,
// leaves the room whole: its data, its record and its alarm.
func TestCrashBeforeTheDeletionIsRecordedLeavesTheRoomWhole(t *testing.T) {
	dir := t.TempDir()
	roomWithAlarm(t, dir)
	// The child's Open writes nothing to node.db: its first write there is
	// the deletion's record.
	cmd := straceChild(t, "TestDeleteCrashChild", []string{"DEN_DELETE_CRASH_DIR=" + dir},
		"-o", "/dev/null", "-e", "trace=pwrite64", "-e", "inject=pwrite64:signal=SIGKILL", "-P", filepath.Join(dir, "node.db-wal"))
	if out, err := cmd.CombinedOutput(); err == nil || strings.Contains(string(out), "not killed") {
		t.Fatalf("den was not killed at the commit: %v %s", err, out)
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok, err := s.Record(deletedID); !ok || err != nil {
		t.Errorf("the room lost its record (%v)", err)
	}
	if alarms, err := s.Alarms(); len(alarms) != 1 || err != nil {
		t.Errorf("the room's alarm: %v (%v), want it indexed", alarms, err)
	}
	r, err := s.Room(deletedID, "k", "n")
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := r.Get("key"); string(v) != "old" || err != nil {
		t.Errorf("the room holds %q (%v), want \"old\"", v, err)
	}
}
