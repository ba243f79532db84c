package storage

import (
	"errors"
	"fmt"
	"sync"

	"modernc.org/libc"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Lookaside is SQLite's pool for a connection's small allocations, set up
// as the connection opens. SQLite's default pool (48,000 bytes: 30 slots
// of 1,200 and 93 of 128) is written through at every open, so every wake
// faults in its 12 pages of memory while a room's few statements use a
// fraction of it. This pool is a quarter of that (7 slots of 1,200, 28 of
// 128): BenchmarkWake's wake p50 went from 0.85 to 0.75 ms and a wake's
// page faults from 41 to 33, with no loss in BenchmarkChatDurableEvents.
const (
	lookasideSlotBytes = 1200
	lookasideBytes     = lookasideSlotBytes * 10
)

// lookasideErr is why the pool could not be sized: SQLite takes its
// process-wide configuration only before it is first used, and something
// in the process used it before this package's init. Rooms then run with
// SQLite's default pool, as before.
var lookasideErr = setLookaside(lookasideSlotBytes, lookasideBytes/lookasideSlotBytes)

// The process-wide settings the first Store to open makes, once: not at
// init, as registering a VFS initializes SQLite, after which a program
// embedding den could no longer configure SQLite itself (modernc.org/
// sqlite's RegisterPageCache, say).
var (
	tuneOnce sync.Once
	vfsErr   error
)

// tune makes the settings on the first call.
func tune() {
	tuneOnce.Do(func() {
		// What SQLite's own build does on Linux, as durable as fsync: a
		// commit's sync leaves the WAL's timestamps to the file system's
		// next journal commit, so a commit that overwrites a WAL padded
		// before (padWAL) waits for its data alone. It cannot fail on
		// Linux.
		_, _ = sqlite.Fdatasync(true)
		vfsErr = registerRoomVFS()
	})
}

// TuningError says why a process-wide SQLite setting den makes (the
// smaller lookaside pool; the room VFS, registered when the first Store
// opens) did not take. Rooms work all the same, with more memory to fault
// in at each wake, or a folder sync at each wake's first commit.
func TuningError() error {
	tune()
	return errors.Join(lookasideErr, vfsErr)
}

// setLookaside makes size-byte slots, count of them in all, the lookaside
// pool of every SQLite connection opened from now on.
func setLookaside(size, count int32) error {
	t := libc.NewTLS()
	defer t.Close()
	// Two ints in 8-byte variadic slots.
	va := libc.Xmalloc(t, 16)
	if va == 0 {
		return errors.New("storage: out of memory configuring SQLite")
	}
	defer libc.Xfree(t, va)
	if rc := sqlite3.Xsqlite3_config(t, sqlite3.SQLITE_CONFIG_LOOKASIDE, libc.VaList(va, size, count)); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("storage: sqlite3_config(SQLITE_CONFIG_LOOKASIDE): error %d", rc)
	}
	return nil
}
