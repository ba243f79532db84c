package storage

import (
	"errors"
	"os"
	"reflect"

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
// the handle checkpoints and truncates it before it closes.
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
