package storage

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
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

// The hooks count SQLite's calls of openDirectory (to sync a folder) and
// lstat for files under hookPrefix, and call SQLite's own.
var (
	hookPrefix                   string
	dirCount, lstatCount         atomic.Int32
	origOpenDirectory, origLstat uintptr
)

func countCall(orig uintptr, n *atomic.Int32, t *libc.TLS, name, arg uintptr) int32 {
	if strings.HasPrefix(libc.GoString(name), hookPrefix) {
		n.Add(1)
	}
	return (*(*func(*libc.TLS, uintptr, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{orig})))(t, name, arg)
}

func countingOpenDirectory(t *libc.TLS, name, fd uintptr) int32 {
	return countCall(origOpenDirectory, &dirCount, t, name, fd)
}

func countingLstat(t *libc.TLS, name, st uintptr) int32 {
	return countCall(origLstat, &lstatCount, t, name, st)
}

// countSyscalls puts the counting hooks in SQLite's table of system
// calls, which every unix VFS shares, for the rest of the process.
func countSyscalls(prefix string) error {
	t := libc.NewTLS()
	defer t.Close()
	vfs, err := findVFS(t, "unix")
	if err != nil {
		return err
	}
	var v sqlite3.Tsqlite3_vfs
	get := libc.AtomicLoadPUintptr(vfs + unsafe.Offsetof(v.FxGetSystemCall))
	set := libc.AtomicLoadPUintptr(vfs + unsafe.Offsetof(v.FxSetSystemCall))
	hookPrefix = prefix
	for _, h := range []struct {
		name string
		orig *uintptr
		hook func(*libc.TLS, uintptr, uintptr) int32
	}{{"openDirectory", &origOpenDirectory, countingOpenDirectory}, {"lstat", &origLstat, countingLstat}} {
		name, err := libc.CString(h.name)
		if err != nil {
			return err
		}
		defer libc.Xfree(t, name)
		*h.orig = (*(*func(*libc.TLS, uintptr, uintptr) uintptr)(unsafe.Pointer(&struct{ uintptr }{get})))(t, vfs, name)
		if *h.orig == 0 {
			return fmt.Errorf("SQLite has no %s system call", h.name)
		}
		fp := *(*uintptr)(unsafe.Pointer(&struct {
			f func(*libc.TLS, uintptr, uintptr) int32
		}{h.hook}))
		if rc := (*(*func(*libc.TLS, uintptr, uintptr, uintptr) int32)(unsafe.Pointer(&struct{ uintptr }{set})))(t, vfs, name, fp); rc != sqlite3.SQLITE_OK {
			return fmt.Errorf("xSetSystemCall(%s): error %d", h.name, rc)
		}
	}
	return nil
}

// A wake's first commit does not sync the room's folder: its WAL's name
// has been on disk since the room was made. A WAL that is missing (here
// removed while the room slept, once it held no frame) is made by SQLite,
// which syncs its folder, and the room's data is whole. Nor does a wake
// look for links along the file's path. The counting hooks change SQLite
// for the whole process, so the test runs in a child.
func TestWakeSyncsNoFolder(t *testing.T) {
	if dir := os.Getenv("DEN_FOLDER_SYNC_DIR"); dir != "" {
		fmt.Println(folderSyncs(dir))
		os.Exit(0)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestWakeSyncsNoFolder$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DEN_FOLDER_SYNC_DIR="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "syncs 0 0 1, lstats at a wake 0" {
		t.Fatalf("child: %q, want folder syncs by SQLite: 0 making the room, 0 at a wake, 1 when the WAL was missing; "+
			"and no lstat at a wake", got)
	}
}

// folderSyncs is TestWakeSyncsNoFolder's child: the folder syncs SQLite
// made for a new room, a wake, and a wake whose WAL was removed, and the
// lstats of the wake.
func folderSyncs(dir string) string {
	if err := TuningError(); err != nil {
		return "ERR " + err.Error()
	}
	if err := countSyscalls(dir); err != nil {
		return "ERR " + err.Error()
	}
	s, err := Open(Options{Dir: dir, Synchronous: SyncFull})
	if err != nil {
		return "ERR " + err.Error()
	}
	defer s.Close()
	const id = "ac03"
	r, err := s.Room(id, "test", "syncs")
	if err != nil {
		return "ERR " + err.Error()
	}
	big := make([]byte, 4<<10)
	var counts []string
	var wakeLstats int32
	for i, step := range []func() error{
		func() error { return r.Put("made", []byte("v")) },
		func() error {
			if err := r.Sleep(); err != nil {
				return err
			}
			if err := r.Wake(); err != nil {
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
			if err := os.Remove(s.path(id) + "-wal"); err != nil {
				return err
			}
			if err := r.Wake(); err != nil {
				return err
			}
			return r.Put("remade", []byte("v"))
		},
	} {
		dirCount.Store(0)
		lstatCount.Store(0)
		if err := step(); err != nil {
			return fmt.Sprintf("ERR step %d: %v", i, err)
		}
		counts = append(counts, fmt.Sprint(dirCount.Load()))
		if i == 1 {
			wakeLstats = lstatCount.Load()
		}
	}
	for _, k := range []string{"made", "woken", "big39", "remade"} {
		if _, ok, err := r.Get(k); !ok || err != nil {
			return fmt.Sprintf("ERR %s: ok %v, err %v", k, ok, err)
		}
	}
	return fmt.Sprintf("syncs %s, lstats at a wake %d", strings.Join(counts, " "), wakeLstats)
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
