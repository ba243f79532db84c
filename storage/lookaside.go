package storage

import (
	"errors"
	"fmt"

	"modernc.org/libc"
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

// TuningError says why a process-wide SQLite setting den makes (the
// smaller lookaside pool) did not take: SQLite was used in the process
// before this package initialized. Rooms work all the same, with more
// memory to fault in at each wake.
func TuningError() error { return lookasideErr }

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
