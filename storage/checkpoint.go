package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"

	"golang.org/x/sys/unix"
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// walKeepBytes bounds the WAL a closing handle leaves behind. A room that
// goes to sleep does not checkpoint: SQLite's checkpoint on close costs
// two fsyncs and a copy of every page the WAL holds, on every sleep, and
// a node putting hundreds of rooms to sleep at once would queue the wakes
// behind them on the disk. The WAL stays valid on disk (the database is
// the file and its WAL, as SQLite always has it), and the next open reads
// it back, which costs time in proportion to its size: past this bound
// the handle checkpoints and truncates it before it closes. With SyncFull
// it is also the length padWAL keeps the WAL at.
const walKeepBytes = 128 << 10

// errNoHandle means the driver no longer exposes its connection's SQLite
// handle the way this file expects: modernc.org/sqlite changed.
var errNoHandle = errors.New("storage: the sqlite driver's connection has no handle den can configure (modernc.org/sqlite changed?)")

// skipCheckpointOnClose sets SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE on dc, a
// modernc.org/sqlite connection inside sql.Conn.Raw. The driver has no API
// for sqlite3_db_config, so this makes the call the way the driver's own
// dbConfigBool does, on the handle sqliteHandle reads.
func skipCheckpointOnClose(dc any) error {
	db, t, err := sqliteHandle(dc)
	if err != nil {
		return err
	}
	// Variadic arguments go in 8-byte slots: the int on, then the int*
	// for the old value, which SQLite may be given as NULL.
	const slot = 8
	va := libc.Xmalloc(t, 2*slot)
	if va == 0 {
		return errors.New("storage: out of memory configuring a room's database")
	}
	defer libc.Xfree(t, va)
	if rc := sqlite3.Xsqlite3_db_config(t, db, sqlite3.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
		libc.VaList(va, int32(1), uintptr(0))); rc != sqlite3.SQLITE_OK {
		return errors.New("storage: sqlite3_db_config(NO_CKPT_ON_CLOSE) failed")
	}
	return nil
}

// sqliteHandle reads the SQLite handle of dc, a modernc.org/sqlite
// connection inside sql.Conn.Raw, and the thread state the driver keeps
// with it. Raw gives the caller the connection to itself.
func sqliteHandle(dc any) (uintptr, *libc.TLS, error) {
	v := reflect.ValueOf(dc)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return 0, nil, errNoHandle
	}
	db, tls := v.Elem().FieldByName("db"), v.Elem().FieldByName("tls")
	if !db.IsValid() || db.Kind() != reflect.Uintptr || db.Uint() == 0 ||
		!tls.IsValid() || tls.Type() != reflect.TypeFor[*libc.TLS]() || tls.IsNil() {
		return 0, nil, errNoHandle
	}
	return uintptr(db.Uint()), (*libc.TLS)(tls.UnsafePointer()), nil
}

// fileSize is the size of the file at path, 0 if it is not there.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// walZeros are what padWAL writes: pages of the zero page until written.
var walZeros [walKeepBytes]byte

// padWAL writes the WAL of the room database at path out to walKeepBytes,
// with zeros past what it holds, making it if it is not there. It runs
// under the room file's lock, before SQLite opens the WAL (or after a
// checkpoint emptied it), so that no other process's frames are padded
// over. With SyncFull each commit syncs the WAL, and a commit that makes
// the file longer waits for the file system's journal to record its new
// size and blocks; a commit into blocks written before waits for its own
// data alone (p90 of the sync 0.47 against 0.87 ms here).
//
// The room VFS opens a WAL that is there without a sync of its folder
// (registerRoomVFS), so a WAL shorter than walKeepBytes (made here, or by
// SQLite in an open that never synced, or padded by a try that failed)
// has its folder synced before the zeros go in, unless nameSynced says
// the caller knows its name is on disk. The zeros themselves are neither
// synced nor needed: the WAL's next sync takes them to disk (for a new or
// truncated WAL that is SQLite's sync of its header, before any frame),
// and when they do not fit (a full disk) the room opens without them, its
// commits slower. A WAL made here gets its database's mode. SQLite
// reads a WAL's frames up to the first that is not valid, and zeros are
// not, so the padding is never taken for data, whether it reached the
// disk or not. A checkpoint that truncates the WAL is followed by a pad,
// so the file stays walKeepBytes long until a room's commits go past it,
// when the close checkpoints anyway.
func padWAL(path string, nameSynced bool) error {
	name := path + "-wal"
	if st, err := os.Stat(name); err == nil && st.Size() >= walKeepBytes {
		return nil
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = likeDatabase(f, path)
	} else if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(name, os.O_WRONLY, 0)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return fmt.Errorf("storage: %w", err)
	}
	defer f.Close()
	if !nameSynced {
		if err := syncPath(filepath.Dir(path)); err != nil {
			return err
		}
	}
	// Best effort: the zeros buy speed, not safety, and on a full disk
	// the room must still open (to be read, or to have data deleted).
	if st, err := f.Stat(); err == nil && st.Size() < walKeepBytes {
		_, _ = f.WriteAt(walZeros[st.Size():], st.Size())
	}
	return nil
}

// likeDatabase gives the WAL f, just made, the mode of the database at
// path and, when den runs as root, its owner, as SQLite gives the WALs it
// makes: a room file an operator made private keeps a private WAL.
func likeDatabase(f *os.File, path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err
	}
	if err := f.Chmod(fs.FileMode(st.Mode & 0o777)); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		return f.Chown(int(st.Uid), int(st.Gid))
	}
	return nil
}

// syncPath makes what the file at path holds durable, or, for a folder,
// the names in it.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("storage: syncing %s: %w", path, err)
	}
	return nil
}
