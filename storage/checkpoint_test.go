package storage

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"modernc.org/libc"
)

// ckptPut writes n keys, value i being size bytes of byte(i), and returns them.
func ckptPut(t *testing.T, r *Room, n, size int) map[string][]byte {
	t.Helper()
	want := map[string][]byte{}
	for i := range n {
		k, v := fmt.Sprintf("k%03d", i), bytes.Repeat([]byte{byte(i + 1)}, size)
		if err := r.Put(k, v); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	return want
}

// ckptCheck reads every key of want back from room id, through a new handle.
func ckptCheck(t *testing.T, s *Store, id string, want map[string][]byte) {
	t.Helper()
	r := openRoom(t, s, id)
	for k, v := range want {
		got, ok, err := r.Get(k)
		if err != nil || !ok || !bytes.Equal(got, v) {
			t.Fatalf("%s after reopening: ok %v, err %v, %d bytes, want %d", k, ok, err, len(got), len(v))
		}
	}
}

func ckptRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A sleeping room must not pay for a checkpoint: SQLite's default on close
// would copy the WAL into the .db file and fsync it.
func TestCloseLeavesSmallWAL(t *testing.T) {
	s := openStore(t, Options{Synchronous: SyncFull})
	const id = "ab01"
	r := openRoom(t, s, id)
	want := ckptPut(t, r, 5, 20)
	p := s.path(id)
	before := ckptRead(t, p)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ckptRead(t, p), before) {
		t.Fatal("Close wrote the .db file: the WAL was checkpointed on close")
	}
	// The commits live only in the WAL now: it must have outlived the handle.
	if n := fileSize(p + "-wal"); n == 0 {
		t.Fatal("-wal is empty or gone after Close")
	}
	ckptCheck(t, s, id, want)
}

// Past walKeepBytes a close checkpoints, so the next wake does not replay
// an ever-growing WAL.
func TestCloseCheckpointsLargeWAL(t *testing.T) {
	s := openStore(t, Options{Synchronous: SyncFull})
	const id = "ab02"
	r := openRoom(t, s, id)
	const n, size = 64, 4 << 10
	want := ckptPut(t, r, n, size)
	p := s.path(id)
	if w := fileSize(p + "-wal"); w <= walKeepBytes {
		t.Fatalf("setup: -wal is %d bytes, want over %d", w, walKeepBytes)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Truncated, then padded out again (padWAL): the same length, but no
	// header, so the next open reads no frame back.
	if w := ckptRead(t, p+"-wal"); len(w) != walKeepBytes || !bytes.Equal(w, walZeros[:]) {
		t.Fatalf("-wal is %d bytes after Close, want %d of zeros: checkpointed and padded", len(w), walKeepBytes)
	}
	if d := fileSize(p); d < n*size {
		t.Fatalf(".db is %d bytes after Close, want the %d written into it", d, n*size)
	}
	ckptCheck(t, s, id, want)
}

// A room that closed without checkpointing keeps its commits only in the
// WAL; they must survive the process dying before anything checkpoints
// them. The test re-runs itself as a child that SIGKILLs itself after
// Room.Close, before Store.Close.
func TestUncheckpointedWALSurvivesCrash(t *testing.T) {
	// Few commits: each costs the WAL a page, and past walKeepBytes the
	// close would checkpoint after all.
	const id, n = "ab03", 10
	marker := func(i int) []byte { return fmt.Appendf(nil, "survivor-%04d", i) }
	if dir := os.Getenv("DEN_CKPT_CRASH_DIR"); dir != "" {
		s, err := Open(Options{Dir: dir, Synchronous: SyncFull})
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		r, err := s.Room(id, "test", "crash")
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		for i := range n {
			if err := r.Put(fmt.Sprintf("k%03d", i), marker(i)); err != nil {
				fmt.Println("ERR", err)
				os.Exit(2)
			}
		}
		if err := r.Close(); err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal ends the process
	}

	dir := t.TempDir()
	cmd := testChild(t, "TestUncheckpointedWALSurvivesCrash", "DEN_CKPT_CRASH_DIR="+dir)
	out, err := cmd.Output()
	// Only a child that got as far as killing itself tested anything.
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, out)
	}

	s := openStore(t, Options{Dir: dir, Synchronous: SyncFull})
	p := s.path(id)
	// Before anything opens the room: its commits are in the WAL, not the
	// .db file, or this test proves nothing about the WAL.
	if fileSize(p+"-wal") == 0 || bytes.Contains(ckptRead(t, p), marker(0)) {
		t.Fatal("setup: the child's commits were checkpointed into the .db file")
	}
	want := map[string][]byte{}
	for i := range n {
		want[fmt.Sprintf("k%03d", i)] = marker(i)
	}
	ckptCheck(t, s, id, want)
}

// skipCheckpointOnClose reads the driver's connection by reflection: when
// the driver changes shape it must say so with errNoHandle rather than
// call into SQLite with a bad handle or panic.
func TestSkipCheckpointOnClose(t *testing.T) {
	type conn struct {
		db  uintptr
		tls *libc.TLS
	}
	cases := map[string]any{
		"nil":              nil,
		"int db":           &struct{ db int }{db: 1},
		"no tls":           &struct{ db uintptr }{db: 1},
		"struct value":     conn{db: 1},
		"nil pointer":      (*conn)(nil),
		"pointer to int":   new(int),
		"zero handle":      &conn{tls: new(libc.TLS)},
		"nil thread state": &conn{db: 1},
	}
	for name, dc := range cases {
		if err := skipCheckpointOnClose(dc); !errors.Is(err, errNoHandle) {
			t.Errorf("%s: err %v, want errNoHandle", name, err)
		}
	}

	// The driver den ships with must still be accepted, or every room
	// fails to open.
	db, err := sql.Open("sqlite", t.TempDir()+"/x.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := db.Conn(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Raw(skipCheckpointOnClose); err != nil {
		t.Fatalf("modernc.org/sqlite's connection: %v", err)
	}
}
