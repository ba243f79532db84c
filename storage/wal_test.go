package storage

import (
	"database/sql"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// walBlocks is the length of the WAL at path and the bytes of disk it has.
func walBlocks(t *testing.T, path string) (size, disk int64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path+"-wal", &st); err != nil {
		t.Fatal(err)
	}
	return st.Size, st.Blocks * 512
}

// With SyncFull a room's WAL is written out to walKeepBytes as the room is
// made, so that a commit overwrites blocks on disk instead of making the
// file longer. It stays that long across commits, sleeps and wakes, and
// what it holds survives a new store. With SyncNormal, which syncs no
// commit, it is not padded.
func TestFullSyncWALIsPadded(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir, Synchronous: SyncFull})
	const id = "ac01"
	r := openRoom(t, s, id)
	p := s.path(id)
	padded := func(when string) {
		t.Helper()
		if size, disk := walBlocks(t, p); size != walKeepBytes || disk < walKeepBytes {
			t.Fatalf("%s: -wal is %d bytes with %d on disk, want %d written out", when, size, disk, walKeepBytes)
		}
	}
	padded("a new room")
	want := ckptPut(t, r, 5, 100)
	padded("after commits")
	if err := r.Sleep(); err != nil {
		t.Fatal(err)
	}
	padded("asleep")
	if err := r.Wake(); err != nil {
		t.Fatal(err)
	}
	if err := r.Put("after-wake", []byte("v")); err != nil {
		t.Fatal(err)
	}
	want["after-wake"] = []byte("v")
	padded("after a wake's commit")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ckptCheck(t, openStore(t, Options{Dir: dir, Synchronous: SyncFull}), id, want)

	n := openStore(t, Options{Synchronous: SyncNormal})
	ckptPut(t, openRoom(t, n, id), 5, 100)
	if size, _ := walBlocks(t, n.path(id)); size >= walKeepBytes {
		t.Fatalf("SyncNormal: -wal is %d bytes, want it unpadded", size)
	}
}

// A WAL shorter than walKeepBytes that holds commits (a room last opened
// with SyncNormal, or by a den before padding) is padded at its first
// open with SyncFull without losing them: the zeros go after its frames.
func TestPadKeepsAnOlderWALsFrames(t *testing.T) {
	dir := t.TempDir()
	const id = "ac02"
	s := openStore(t, Options{Dir: dir, Synchronous: SyncNormal})
	want := ckptPut(t, openRoom(t, s, id), 10, 200)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	p := s.path(id)
	if size, _ := walBlocks(t, p); size == 0 || size >= walKeepBytes {
		t.Fatalf("setup: -wal is %d bytes, want the commits in a short WAL", size)
	}
	full := openStore(t, Options{Dir: dir, Synchronous: SyncFull})
	ckptCheck(t, full, id, want)
	if size, _ := walBlocks(t, p); size != walKeepBytes {
		t.Fatalf("-wal is %d bytes after an open with SyncFull, want %d", size, walKeepBytes)
	}
}

// syncTrace runs the calling test as a child under strace, where it runs
// child on a fresh data folder and prints what child returns ("ok" when
// all went well). It splits what it traced at the child's markers (an
// access of dir/mark-N, see mark): for each step, the syncs of room id's
// folder and the lstats of paths under the data folder. It skips without
// strace.
func syncTrace(t *testing.T, id string, child func(dir, id string) string) (syncs, lstats []int) {
	t.Helper()
	const env = "DEN_SYNC_TRACE_DIR"
	if dir := os.Getenv(env); dir != "" {
		fmt.Println(child(dir, id))
		os.Exit(0)
	}
	dir := t.TempDir()
	folder := filepath.Join(dir, "rooms", id[:2])
	trace := filepath.Join(t.TempDir(), "trace")
	cmd := straceChild(t, t.Name(), []string{env + "=" + dir},
		"-y", "-e", "trace=fsync,fdatasync,lstat,access,faccessat,faccessat2", "-o", trace)
	out, err := cmd.Output()
	if got := strings.TrimSpace(string(out)); err != nil || got != "ok" {
		t.Fatalf("child: %v: %s", err, out)
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(line, "access") && strings.Contains(line, "\""+filepath.Join(dir, "mark-")):
			syncs, lstats = append(syncs, 0), append(lstats, 0)
		case len(syncs) == 0:
		case strings.Contains(line, "sync("):
			if strings.Contains(line, "<"+folder+">") {
				syncs[len(syncs)-1]++
			}
		case strings.Contains(line, "lstat(\""+dir):
			lstats[len(lstats)-1]++
		}
	}
	return syncs, lstats
}

// mark begins step i of a child of syncTrace.
func mark(dir string, i int) { _ = unix.Access(filepath.Join(dir, fmt.Sprint("mark-", i)), unix.F_OK) }

// With SyncFull, a room's folder (the names of its file and its WAL) is
// synced when the room is made, and whenever its WAL had to be made again
// (removed while the room slept; or removed by a backup's connection,
// then made by SQLite in a wake that only read and never synced), before
// a commit into it returns. A wake into a WAL that is there syncs no
// folder, and does not look at every folder on the file's path for a
// link.
func TestWakeSyncsNoFolder(t *testing.T) {
	syncs, lstats := syncTrace(t, "ac03", folderSyncs)
	if len(syncs) != 5 {
		t.Fatalf("%d steps traced, want 5", len(syncs))
	}
	// Step 3 is the backup, whose own syncs do not count.
	if syncs[0] == 0 || syncs[2] == 0 || syncs[4] == 0 {
		t.Fatalf("folder syncs per step %v: want some in the room's making and where its WAL was made again", syncs)
	}
	if syncs[1] != 0 || lstats[1] != 0 {
		t.Fatalf("a wake synced the folder %d times and made %d lstats, want none", syncs[1], lstats[1])
	}
}

// folderSyncs is TestWakeSyncsNoFolder's child.
func folderSyncs(dir, id string) string {
	s, err := Open(Options{Dir: dir, Synchronous: SyncFull})
	if err != nil {
		return "ERR " + err.Error()
	}
	defer s.Close()
	var r *Room
	wal := s.path(id) + "-wal"
	big := make([]byte, 4<<10)
	sleepWake := func() error {
		if err := r.Sleep(); err != nil {
			return err
		}
		return r.Wake()
	}
	for i, step := range []func() error{
		func() (err error) {
			if r, err = s.Room(id, "test", "syncs"); err != nil {
				return err
			}
			return r.Put("made", []byte("v"))
		},
		func() error {
			if err := sleepWake(); err != nil {
				return err
			}
			return r.Put("woken", []byte("v"))
		},
		func() error {
			// Past walKeepBytes, so the sleep checkpoints: the WAL then
			// holds nothing and can go.
			for j := range 40 {
				if err := r.Put(fmt.Sprint("big", j), big); err != nil {
					return err
				}
			}
			if err := r.Sleep(); err != nil {
				return err
			}
			if err := os.Remove(wal); err != nil {
				return err
			}
			if err := r.Wake(); err != nil {
				return err
			}
			return r.Put("remade", []byte("v"))
		},
		func() error {
			if err := r.Sleep(); err != nil {
				return err
			}
			// A backup of the sleeping room: its connection, the last,
			// deletes the WAL as it closes.
			db, err := sql.Open("sqlite", fileURI(s.path(id)))
			if err != nil {
				return err
			}
			var n int
			err = db.QueryRow(`SELECT count(*) FROM _den_kv`).Scan(&n)
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if _, err := os.Stat(wal); err == nil {
				return fmt.Errorf("the backup left the WAL")
			}
			return nil
		},
		func() error {
			if err := r.Wake(); err != nil {
				return err
			}
			if _, _, err := r.Get("made"); err != nil {
				return err
			}
			if err := sleepWake(); err != nil {
				return err
			}
			return r.Put("after-backup", []byte("v"))
		},
	} {
		mark(dir, i)
		if err := step(); err != nil {
			return fmt.Sprintf("ERR step %d: %v", i, err)
		}
	}
	for _, k := range []string{"made", "woken", "big39", "remade", "after-backup"} {
		if _, ok, err := r.Get(k); !ok || err != nil {
			return fmt.Sprintf("ERR %s: ok %v, err %v", k, ok, err)
		}
	}
	return "ok"
}

// A new room on a disk too full for its WAL's padding (here a file size
// limit under it) opens and commits all the same, and its folder (its
// file's name and its WAL's) is synced before the commit returns.
func TestPadFailureStillSyncsTheFolder(t *testing.T) {
	syncs, _ := syncTrace(t, "ad03", padFailure)
	if len(syncs) != 1 || syncs[0] == 0 {
		t.Fatalf("folder syncs %v: want some before the commit returned", syncs)
	}
}

// padFailure is TestPadFailureStillSyncsTheFolder's child.
func padFailure(dir, id string) string {
	s, err := Open(Options{Dir: dir, Synchronous: SyncFull})
	if err != nil {
		return "ERR " + err.Error()
	}
	mark(dir, 0)
	if _, err := limitFileSize(64 << 10); err != nil {
		return "ERR " + err.Error()
	}
	r, err := s.Room(id, "test", "padfail")
	if err == nil {
		err = r.Put("k", []byte("v"))
	}
	if err != nil {
		return "ERR " + err.Error()
	}
	if size := fileSize(s.path(id) + "-wal"); size >= walKeepBytes {
		return fmt.Sprintf("ERR the WAL is %d bytes: the limit did not stop its padding", size)
	}
	// The power goes now: no Close.
	return "ok"
}

// limitFileSize makes max bytes the most a file of the process may hold,
// as a full disk would, until restore. SIGXFSZ is ignored from now on, so
// that a write past the limit fails rather than ends the process.
func limitFileSize(max uint64) (restore func() error, err error) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		return nil, err
	}
	signal.Ignore(syscall.SIGXFSZ)
	lim := old
	lim.Cur = max
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &lim); err != nil {
		return nil, err
	}
	return func() error { return unix.Setrlimit(unix.RLIMIT_FSIZE, &old) }, nil
}

// A WAL den makes has its database's mode: a room file an operator made
// private does not get a WAL others can read.
func TestMadeWALHasTheDatabasesMode(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Options{Dir: dir, Synchronous: SyncFull})
	const id = "ac05"
	if err := openRoom(t, s, id).Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	p := s.path(id)
	if err := emptyWAL(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p + "-wal"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	ckptCheck(t, openStore(t, Options{Dir: dir, Synchronous: SyncFull}), id, map[string][]byte{"k": []byte("v")})
	st, err := os.Stat(p + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o640 {
		t.Fatalf("the WAL den made has mode %o, want the database's 640", m)
	}
}

// A store opened on a relative data folder keeps its rooms where it found
// them when the process's working directory changes: a room that wakes
// after a chdir reopens its own file, not a new one under the new folder.
func TestRelativeDataFolderSurvivesChdir(t *testing.T) {
	base := t.TempDir()
	t.Chdir(base)
	s := openStore(t, Options{Dir: "data", Synchronous: SyncFull})
	const id = "ac04"
	r := openRoom(t, s, id)
	if err := r.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := r.Sleep(); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	if err := r.Wake(); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := r.Get("k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("after a chdir: %q, ok %v, err %v; want the room's value", v, ok, err)
	}
	if _, err := os.Stat(filepath.Join(base, "data", "rooms", id[:2], id+".db")); err != nil {
		t.Fatal(err)
	}
}
