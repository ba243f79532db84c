package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLite's lock bytes: every reader in another process takes a read lock
// on the pending byte and on the shared range, and every writer a write
// lock on them, so a write lock on all of them keeps every SQLite user
// out, as SQLite's own exclusive lock does.
const (
	pendingByte = 0x40000000
	lockBytes   = 2 + 510 // the pending and reserved bytes, then the shared range
)

// busyTimeout is how long opening a room's file waits for another process
// (a sqlite3 shell, a backup) to let go of it. A variable for tests.
var busyTimeout = 5 * time.Second

// ErrFileBusy means another process held a room's file for all of
// busyTimeout.
var ErrFileBusy = errors.New("storage: the room's database file is locked by another process")

// errReadOnly means SQLite could open a room's file only for reading.
// cantOpen counts it: when descriptors ran out, the pool gives idle ones
// up and the open is tried again.
var errReadOnly = errors.New("storage: the room's database file opened read-only")

// lockFile takes a write lock on SQLite's lock bytes of the room's file at
// path, on the descriptor SQLite opened it with (dc is a modernc.org/sqlite
// connection inside sql.Conn.Raw), waiting up to busyTimeout for another
// process to let go. It is an open file description lock: it goes when
// SQLite closes that descriptor, and no other descriptor's close in the
// process drops it, as one would a process-wide POSIX lock.
func lockFile(dc any, path string) error {
	fd, err := fileDescriptor(dc)
	if err != nil {
		return err
	}
	var open unix.Stat_t
	if err := unix.Fstat(fd, &open); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	// The descriptor is read from SQLite's struct for the file: make sure
	// it is the room's file before locking anything with it.
	if err := sameFile(&open, path); err != nil {
		return err
	}
	deadline := time.Now().Add(busyTimeout)
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		err := lockSQLiteBytes(uintptr(fd))
		if err == nil {
			break
		}
		if errors.Is(err, unix.EBADF) {
			// A write lock on a descriptor open for reading: SQLite fell
			// back to read-only, as it does when its read-write open
			// fails (out of descriptors, or no permission).
			return errReadOnly
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			return fmt.Errorf("storage: locking a room's file: %w", err)
		}
		if time.Now().After(deadline) {
			return ErrFileBusy
		}
		time.Sleep(pause)
	}
	// Checked again under the lock: a file put in place of this one while
	// the lock was awaited is not the one locked.
	return sameFile(&open, path)
}

// lockSQLiteBytes tries once for an open file description write lock on
// SQLite's lock bytes of the file open at fd.
func lockSQLiteBytes(fd uintptr) error {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: pendingByte, Len: lockBytes}
	return unix.FcntlFlock(fd, unix.F_OFD_SETLK, &lk)
}

// sameFile reports whether path names the file open is the status of.
func sameFile(open *unix.Stat_t, path string) error {
	var named unix.Stat_t
	if err := unix.Stat(path, &named); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if open.Dev != named.Dev || open.Ino != named.Ino {
		return fmt.Errorf("storage: %s is not the file SQLite opened: it was replaced during the open", path)
	}
	return nil
}

// fileDescriptor is the descriptor of dc's main database file, read
// through SQLITE_FCNTL_FILE_POINTER from the unix VFS's struct for it.
func fileDescriptor(dc any) (int, error) {
	db, t, err := sqliteHandle(dc)
	if err != nil {
		return 0, err
	}
	// The out value lives in C memory and is read back by copy, so no Go
	// pointer is made from a C address.
	out := libc.Xcalloc(t, 1, 8)
	if out == 0 {
		return 0, errors.New("storage: out of memory opening a room's database")
	}
	defer libc.Xfree(t, out)
	// A NULL database name is the main database.
	if rc := sqlite3.Xsqlite3_file_control(t, db, 0, sqlite3.SQLITE_FCNTL_FILE_POINTER, out); rc != sqlite3.SQLITE_OK {
		return 0, fmt.Errorf("storage: sqlite3_file_control(FILE_POINTER): error %d", rc)
	}
	f := uintptr(binary.NativeEndian.Uint64(libc.GoBytes(out, 8)))
	if f == 0 {
		return 0, errNoHandle
	}
	var uf sqlite3.TunixFile
	fh := libc.GoBytes(f+unsafe.Offsetof(uf.Fh), int(unsafe.Sizeof(uf.Fh)))
	return int(int32(binary.NativeEndian.Uint32(fh))), nil
}

// checkFileLocks fails when the file system under dir has no open file
// description locks (Linux before 3.15, some network and FUSE file
// systems), so that a data folder where no room could open says so at
// start-up rather than at every wake.
func checkFileLocks(dir string) error {
	f, err := os.CreateTemp(dir, ".lock-check-*")
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := lockSQLiteBytes(f.Fd()); err != nil {
		return fmt.Errorf("storage: the data folder %s cannot hold the locks den puts on rooms' files "+
			"(open file description locks: Linux 3.15 or later, on a file system that has them): %w", dir, err)
	}
	return nil
}
